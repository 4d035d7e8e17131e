"""Every error the API returns, the framework's own included, in OpenAI's shape."""
from __future__ import annotations

import json
import logging

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage

from bots.api.keys import LARGER_BODIES, SETTINGS
from engine.errors import ConfabError, EngineBusy

log = logging.getLogger(__name__)

_HTTP_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
               404: "invalid_request_error", 405: "invalid_request_error",
               413: "invalid_request_error", 429: "rate_limit_error"}
_HTTP_CODES = {401: "invalid_api_key", 404: "not_found", 405: "method_not_allowed",
               413: "request_too_large", 415: "unsupported_media_type", 429: "rate_limit_exceeded"}


def error_body(message: str, type_: str, code: str | None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(status: int, message: str, type_: str, code: str | None,
                   param: str | None = None, headers: dict | None = None) -> web.Response:
    return web.Response(status=status, text=json.dumps(error_body(message, type_, code, param)),
                        content_type="application/json", headers=headers)


def from_confab(error: ConfabError) -> web.Response:
    headers = {}
    if isinstance(error, EngineBusy):
        headers["Retry-After"] = str(int(round(error.retry_after)))
    if error.data.get("job_id"):       # the job was accepted, then failed
        headers["X-Confab-Job-Id"] = str(error.data["job_id"])
    status = error.status if 400 <= error.status < 600 else 500
    return error_response(status, error.message, error.kind, error.code,
                          error.data.get("param"), headers)


@web.middleware
async def openai_errors(request: web.Request, handler):
    try:
        return await handler(request)
    except ConfabError as e:
        return from_confab(e)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        message = e.text if e.text and not e.text.startswith(f"{e.status}:") else e.reason
        if e.status == 413:
            settings = request.app[SETTINGS]
            larger = request.app[LARGER_BODIES].get(request.path)
            limit = larger(settings) if larger else settings.max_body_bytes
            message = f"The request body is too large; the limit is {limit} bytes."
        elif e.status == 404:
            message = f"No such route: {request.method} {request.path}"
        elif e.status == 405:
            message = f"{request.method} is not allowed on {request.path}"
        headers = {k: v for k, v in e.headers.items() if k in ("Allow", "Retry-After")}
        return error_response(e.status, message, _HTTP_TYPES.get(e.status, "invalid_request_error"),
                              _HTTP_CODES.get(e.status), headers=headers)
    except BadHttpMessage as e:   # a malformed body part (multipart headers, encodings)
        return error_response(400, f"The request is malformed: {e.message}", "invalid_request_error",
                              "malformed_request")
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "Internal server error; the details are in Confab's log.",
                              "server_error", "internal_error")
