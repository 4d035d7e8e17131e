"""The asynchronous form of every endpoint, for work that must survive a restart.

POST /v1/jobs {"endpoint": "/v1/chat/completions", "body": {...}} answers at once with
{"id", "object": "job", "status": "queued"}; GET /v1/jobs/{id} gives the status and, when
done, the same response the endpoint would have given. The job is in the store before the
POST is answered, so it runs even if Confab restarts first.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Callable

from aiohttp import web

from ..errors import BadRequest, ConfabError
from ..jobs import Job, Origin
from .app_util import caller_id
from .keys import ENGINE, SETTINGS
from .validate import read_json


@dataclass(frozen=True)
class AsyncEndpoint:
    parse: Callable[[dict, object, Origin], Job]       # (body, settings, origin) -> job
    render: Callable[[Job, dict], dict]                # (job, result record) -> response body


ASYNC_ENDPOINTS: dict[str, AsyncEndpoint] = {}


def register_async(path: str, parse, render) -> None:
    ASYNC_ENDPOINTS[path] = AsyncEndpoint(parse, render)


def _chat_render(job, result: dict) -> dict:
    from .chat import completion_id
    usage = result.get("usage") or {}
    prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    return {"id": completion_id(job.id), "object": "chat.completion", "created": int(job.created_at),
            "model": result.get("model", job.model), "system_fingerprint": None,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": result.get("text", "")},
                         "logprobs": None, "finish_reason": result.get("finish_reason", "stop")}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion}}


def _chat_parse(body, settings, origin):
    from .chat import parse_chat
    if body.get("stream"):
        raise BadRequest("An asynchronous job cannot stream; leave out 'stream'.", param="body.stream")
    return parse_chat(body, settings, origin)


register_async("/v1/chat/completions", _chat_parse, _chat_render)


def _job_object(job_id: str, endpoint: str, status: str, created: float) -> dict:
    return {"id": job_id, "object": "job", "endpoint": endpoint, "status": status,
            "created_at": int(created)}


async def create_job(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    body = await read_json(request)
    endpoint = body.get("endpoint")
    if endpoint not in ASYNC_ENDPOINTS:
        raise BadRequest(f"'endpoint' must be one of {', '.join(sorted(ASYNC_ENDPOINTS))}.",
                         param="endpoint")
    inner = body.get("body")
    if not isinstance(inner, dict):
        raise BadRequest("'body' must be the JSON object the endpoint takes.", param="body")
    origin = Origin(platform="api", user=caller_id(request))
    job = ASYNC_ENDPOINTS[endpoint].parse(inner, request.app[SETTINGS], origin)
    job.meta = {**job.meta, "endpoint": endpoint, "api_key_id": caller_id(request)}
    handle = await engine.submit(job)
    return web.json_response(_job_object(handle.id, endpoint, "queued", job.created_at),
                             status=202, headers={"X-Confab-Job-Id": handle.id,
                                                  "Location": f"/v1/jobs/{handle.id}"})


async def get_job(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    job_id = request.match_info["job_id"]
    record = await engine.store.get_job(job_id)
    not_found = web.HTTPNotFound(text=f"No job {job_id}.")
    if record is None:
        raise not_found
    payload = record["payload"]
    meta = payload.get("meta") or {}
    if meta.get("api_key_id") not in (None, caller_id(request)):
        raise not_found   # someone else's job: do not even confirm it exists
    endpoint = meta.get("endpoint", "")
    out = _job_object(job_id, endpoint, record["status"], record["created"])
    if record["status"] == "done" and endpoint in ASYNC_ENDPOINTS:
        from ..engine import job_from_record
        from ..jobs import JOB_TYPES
        job = job_from_record(JOB_TYPES[payload["kind"]], payload)
        out["response"] = ASYNC_ENDPOINTS[endpoint].render(job, record["result"] or {})
    elif record["status"] in ("failed", "cancelled"):
        out["error"] = {"message": record["error"] or record["status"], "type": record["status"],
                        "code": record["status"]}
    return web.json_response(out)


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/jobs", create_job)
    app.router.add_get("/v1/jobs/{job_id}", get_job)
