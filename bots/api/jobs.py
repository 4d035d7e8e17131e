"""The asynchronous form of every endpoint, for work that must survive a restart.

POST /v1/jobs {"endpoint": "/v1/audio/speech", "body": {...}} answers at once (202) with
{"id", "object": "job", "status": "queued"}; GET /v1/jobs/{id} gives the status and, when done,
the same response the endpoint would have given: its JSON as "response", or for audio and text
formats {"content_type", "b64_data"} / {"content_type", "text"}. GET /v1/jobs/{id}/content
answers exactly as the endpoint would have (the audio bytes, with their content type).

The job is in the store before the POST is answered, so it runs even if Confab restarts first;
it keeps what its response needs besides the result (the format asked for) in `job.meta`, and
its whole result (bytes too) is kept in the store when it finishes (engine.Engine.job_succeeded).
Each endpoint shares its two halves with its synchronous route: `start` checks the body and
queues the job, `respond` turns the finished job into the response. A multipart endpoint
(transcriptions, translations) takes its form fields as JSON and the file as a base64 data: URL.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from aiohttp import web

from bots.api.app_util import caller_id
from bots.api.audio import speech_response, start_speech, start_transcription, transcript_response
from bots.api.chat import chat_response, start_chat
from bots.api.completions import completion_response, start_completion
from bots.api.embeddings import embeddings_response, start_embeddings
from bots.api.errors import error_response
from bots.api.images import generation_response, start_generation
from bots.api.keys import ENGINE, LARGER_BODIES, SETTINGS
from bots.api.validate import read_json
from engine.errors import BadMedia, BadRequest, ConfabError, LimitExceeded
from engine.jobs import JOB_TYPES, Job
from engine.runtime.engine import WHOLE_RESULT, job_from_record, result_from_record
from engine.wire import from_wire

Start = Callable[[web.Request, dict, dict], Awaitable[Any]]        # (request, body, meta) -> handle
Respond = Callable[[web.Request, Job, Any], Awaitable[web.Response]]


@dataclass(frozen=True)
class AsyncEndpoint:
    start: Start
    respond: Respond


ASYNC_ENDPOINTS: dict[str, AsyncEndpoint] = {}


def register_async(path: str, start: Start, respond: Respond) -> None:
    ASYNC_ENDPOINTS[path] = AsyncEndpoint(start, respond)


def body_limit(settings) -> int:
    """A job's body may carry an audio file as base64 (4/3 of its size) besides its fields."""
    return max(settings.max_body_bytes, settings.max_audio_bytes * 4 // 3 + 2**20)


# -- the endpoints ------------------------------------------------------------------------------

def _no_stream(body: dict) -> None:
    if body.get("stream"):
        raise BadRequest("An asynchronous job cannot stream; leave out 'stream'.", param="body.stream")


async def _start_chat(request, body, meta):
    _no_stream(body)
    return await start_chat(request, body, meta)


def _no_stream_start(start: Start) -> Start:
    async def checked(request, body, meta):
        _no_stream(body)
        return await start(request, body, meta)
    return checked


_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?:;[\w-]+=[^;,]*)*;base64,")


def _file_of(body: dict, settings) -> bytes:
    url = body.get("file")
    m = _DATA_URL.match(url) if isinstance(url, str) else None
    if m is None:
        raise BadRequest("'file' must be the audio as a base64 data: URL "
                         "(data:audio/wav;base64,...).", param="body.file")
    payload = url[m.end():]
    if len(payload) * 3 // 4 > settings.max_audio_bytes + 3:
        raise LimitExceeded("The audio file", f"{len(payload) * 3 // 4 / 2**20:.1f}",
                            f"{settings.max_audio_bytes / 2**20:.1f}", "MB", status=413, param="body.file")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise BadMedia("The file's data: URL is not valid base64.", param="body.file") from None


def _form_fields(body: dict) -> dict[str, list[str]]:
    """The JSON body as the multipart form's fields would be."""
    fields: dict[str, list[str]] = {}
    for name, value in body.items():
        if name == "file" or value is None:
            continue
        values = value if isinstance(value, list) else [value]
        fields[name] = [str(v).lower() if isinstance(v, bool) else str(v) for v in values]
    return fields


def _start_transcript(task: str) -> Start:
    async def start(request, body, meta):
        _no_stream(body)
        data = _file_of(body, request.app[SETTINGS])
        return await start_transcription(request, data, _form_fields(body), task, meta)
    return start


def _register_endpoints() -> None:
    register_async("/v1/chat/completions", _start_chat, chat_response)       # images too (vision)
    register_async("/v1/completions", _no_stream_start(start_completion), completion_response)
    register_async("/v1/embeddings", start_embeddings, embeddings_response)
    register_async("/v1/images/generations", start_generation, generation_response)
    register_async("/v1/audio/speech", start_speech, speech_response)
    register_async("/v1/audio/transcriptions", _start_transcript("transcribe"), transcript_response)
    register_async("/v1/audio/translations", _start_transcript("translate"), transcript_response)


# -- the routes -----------------------------------------------------------------------------------

def _job_object(job_id: str, endpoint: str, status: str, created: float) -> dict:
    return {"id": job_id, "object": "job", "endpoint": endpoint, "status": status,
            "created_at": int(created)}


async def create_job(request: web.Request) -> web.Response:
    request = request.clone(client_max_size=body_limit(request.app[SETTINGS]))
    body = await read_json(request)
    endpoint = body.get("endpoint")
    if endpoint not in ASYNC_ENDPOINTS:
        raise BadRequest(f"'endpoint' must be one of {', '.join(sorted(ASYNC_ENDPOINTS))}.",
                         param="endpoint")
    inner = body.get("body")
    if not isinstance(inner, dict):
        raise BadRequest("'body' must be the JSON object the endpoint takes.", param="body")
    meta = {"endpoint": endpoint, "api_key_id": caller_id(request)}
    handle = await ASYNC_ENDPOINTS[endpoint].start(request, inner, meta)
    return web.json_response(_job_object(handle.id, endpoint, "queued", handle.job.created_at),
                             status=202, headers={"X-Confab-Job-Id": handle.id,
                                                  "Location": f"/v1/jobs/{handle.id}"})


async def _record(request: web.Request) -> dict:
    job_id = request.match_info["job_id"]
    record = await request.app[ENGINE].store.get_job(job_id)
    meta = (record or {}).get("payload", {}).get("meta") or {}
    if record is None or meta.get("api_key_id") not in (None, caller_id(request)):
        # someone else's job: do not even confirm it exists
        raise web.HTTPNotFound(text=f"No job {job_id}.")
    return record


async def _response(request: web.Request, record: dict) -> web.Response:
    """The endpoint's response for a finished job, rebuilt from the store."""
    payload = record["payload"]
    job = job_from_record(JOB_TYPES[payload["kind"]], payload)
    kept = record["result"] or {}
    result = from_wire(kept[WHOLE_RESULT]) if WHOLE_RESULT in kept else result_from_record(kept)
    if result is None:
        raise ConfabError(f"The result of {job.id} was not kept.", job_id=job.id)
    return await ASYNC_ENDPOINTS[payload["meta"]["endpoint"]].respond(request, job, result)


def _embedded(response: web.Response) -> dict | Any:
    """A response as a JSON value: its JSON, else its text or bytes with their type."""
    body = response.body or b""
    ctype = response.content_type
    if ctype == "application/json":
        return json.loads(body)
    if ctype.startswith("text/"):
        return {"content_type": ctype, "text": body.decode(response.charset or "utf-8")}
    return {"content_type": ctype, "b64_data": base64.b64encode(body).decode("ascii")}


async def get_job(request: web.Request) -> web.Response:
    record = await _record(request)
    job_id, status = record["id"], record["status"]
    endpoint = (record["payload"].get("meta") or {}).get("endpoint", "")
    out = _job_object(job_id, endpoint, status, record["created"])
    if status == "done" and endpoint in ASYNC_ENDPOINTS:
        try:
            out["response"] = _embedded(await _response(request, record))
            out["content_url"] = f"/v1/jobs/{job_id}/content"
        except ConfabError as e:      # e.g. a picture removed after its keeping time
            out["status"] = "failed"
            out["error"] = {"message": e.message, "type": e.kind, "code": e.code}
    elif status in ("failed", "cancelled"):
        out["error"] = {"message": record["error"] or status, "type": status, "code": status}
    return web.json_response(out, headers={"X-Confab-Job-Id": job_id})


async def get_content(request: web.Request) -> web.Response:
    """Exactly what the endpoint would have answered (audio as audio, srt as text)."""
    record = await _record(request)
    job_id, status = record["id"], record["status"]
    endpoint = (record["payload"].get("meta") or {}).get("endpoint", "")
    if status == "done" and endpoint in ASYNC_ENDPOINTS:
        return await _response(request, record)
    why = f" ({record['error']})" if record["error"] else ""
    return error_response(409, f"Job {job_id} is {status}{why}; its content is there once it is done.",
                          "invalid_request_error", "job_not_done", headers={"X-Confab-Job-Id": job_id})


def setup(app: web.Application) -> None:
    _register_endpoints()
    app[LARGER_BODIES]["/v1/jobs"] = body_limit
    app.router.add_post("/v1/jobs", create_job)
    app.router.add_get("/v1/jobs/{job_id}", get_job)
    app.router.add_get("/v1/jobs/{job_id}/content", get_content)
