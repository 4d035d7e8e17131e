"""POST /v1/chat/completions and GET /v1/models."""
from __future__ import annotations

import asyncio
import json

from aiohttp import web

from ..errors import BadRequest, ConfabError, PromptTooLong
from ..jobs import ChatJob, ChatMessage, ChatResult, Origin, Token
from .app_util import caller_id, result_of
from .errors import error_body
from .keys import ENGINE
from .validate import limited_int, number, read_json, string

ROLES = ("system", "developer", "user", "assistant", "tool")


def parse_messages(raw, max_chars: int) -> list[ChatMessage]:
    if not isinstance(raw, list) or not raw:
        raise BadRequest("'messages' must be a non-empty list.", param="messages")
    out, total = [], 0
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise BadRequest(f"messages[{i}] must be an object.", param=f"messages[{i}]")
        role = m.get("role")
        if role not in ROLES:
            raise BadRequest(f"messages[{i}].role must be one of {', '.join(ROLES)}.",
                             param=f"messages[{i}].role")
        content = m.get("content")
        if content is None:
            content = ""
        if isinstance(content, list):
            texts = []
            for part in content:
                if not isinstance(part, dict) or part.get("type") not in ("text", "image_url", "input_text"):
                    raise BadRequest(f"messages[{i}].content has a part Confab does not understand.",
                                     param=f"messages[{i}].content")
                if part["type"] == "image_url":
                    raise BadRequest("Image parts need a vision model, and none is installed. "
                                     "Pull one with `confab models pull llava-1.5-7b`.",
                                     param=f"messages[{i}].content")
                texts.append(str(part.get("text", "")))
            content = "\n".join(texts)
        if not isinstance(content, str):
            raise BadRequest(f"messages[{i}].content must be a string or a list of parts.",
                             param=f"messages[{i}].content")
        total += len(content)
        if total > max_chars:
            raise PromptTooLong("The prompt", total, max_chars, "characters")
        out.append(ChatMessage("system" if role == "developer" else role, content))
    return out


def parse_stream(body: dict) -> tuple[bool, dict]:
    """(stream or not, stream_options), refused as OpenAI refuses them when mistyped."""
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise BadRequest("'stream' must be true or false.", param="stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise BadRequest("'stream_options' must be an object.", param="stream_options")
    return bool(stream), options or {}


def parse_chat(body: dict, settings, origin: Origin) -> ChatJob:
    messages = parse_messages(body.get("messages"), settings.max_prompt_chars)
    if body.get("n") not in (None, 1):
        raise BadRequest("Confab returns one choice per request; 'n' must be 1.", param="n")
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and (not isinstance(stop, list) or len(stop) > 4
                             or not all(isinstance(s, str) for s in stop)):
        raise BadRequest("'stop' must be a string or a list of up to 4 strings.", param="stop")
    priority = body.get("priority")
    if priority is not None and (isinstance(priority, bool) or priority not in (0, 1, 2)):
        raise BadRequest("'priority' must be 0, 1 or 2.", param="priority")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise BadRequest("'seed' must be an integer.", param="seed")
    return ChatJob(
        model=string(body, "model", "") or "",
        origin=origin,
        priority=priority,
        messages=messages,
        max_tokens=limited_int(body, ("max_completion_tokens", "max_tokens"), settings.max_tokens),
        temperature=number(body, "temperature", 0.8, 0, 2),
        top_p=number(body, "top_p", 0.95, 0, 1),
        top_k=number(body, "top_k", 40, 0, 1000, integer=True),
        stop=stop or [],
        presence_penalty=number(body, "presence_penalty", 0.0, -2, 2),
        frequency_penalty=number(body, "frequency_penalty", 0.0, -2, 2),
        repeat_penalty=number(body, "repeat_penalty", 1.0, 0, 2),
        seed=seed,
    )


def completion_id(job_id: str) -> str:
    return "chatcmpl-" + job_id.removeprefix("job_")


def usage_dict(result: ChatResult) -> dict:
    u = result.usage
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
            "total_tokens": u.total_tokens}


async def start_chat(request: web.Request, body: dict, meta: dict):
    """Check the request and queue its job, with `meta` (see engine/api/jobs.py); images go to
    the vision model (or OCR)."""
    from .vision import has_image_parts, start_vision
    if has_image_parts(body.get("messages")):
        return await start_vision(request, body, meta)
    engine = request.app[ENGINE]
    user = string(body, "user") or ""
    origin = Origin(platform="api", user=caller_id(request) + (f"/{user[:64]}" if user else ""))
    job = parse_chat(body, engine.settings, origin)
    job.meta.update(meta)
    return await engine.submit(job)


async def chat_response(request: web.Request, job, result: ChatResult) -> web.Response:
    """The chat.completion for a finished job (a vision job's too: see engine/api/vision.py)."""
    from .vision import answer_prefix, image_headers
    return web.json_response({
        "id": completion_id(job.id), "object": "chat.completion", "created": int(job.created_at),
        "model": result.model, "system_fingerprint": None,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer_prefix(job) + result.text},
                     "logprobs": None, "finish_reason": result.finish_reason}],
        "usage": usage_dict(result)}, headers={"X-Confab-Job-Id": job.id, **image_headers(job)})


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    stream, options = parse_stream(body)
    from .vision import has_image_parts, stream_with_images
    handle = await start_chat(request, body, {})
    if not stream:
        return await chat_response(request, handle.job, await result_of(handle))
    if has_image_parts(body.get("messages")):
        return await stream_with_images(request, body, handle)
    job = handle.job
    headers = {"X-Confab-Job-Id": handle.id}
    created = int(job.created_at)
    cid = completion_id(handle.id)

    response = web.StreamResponse(headers={**headers, "Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
    await response.prepare(request)

    def chunk(delta: dict, finish=None) -> bytes:
        data = {"id": cid, "object": "chat.completion.chunk", "created": created,
                "model": job.model, "system_fingerprint": None,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if options.get("include_usage"):
            data["usage"] = None   # as OpenAI: null on every chunk but the last, usage-only one
        return b"data: " + json.dumps(data).encode() + b"\n\n"

    try:
        await response.write(chunk({"role": "assistant", "content": ""}))
        async for event in handle:
            if isinstance(event, Token):
                await response.write(chunk({"content": event.text}))
        try:
            result = await handle.result()
        except ConfabError as e:
            await response.write(b"data: " + json.dumps(error_body(e.message, e.kind, e.code)).encode() + b"\n\n")
            await response.write(b"data: [DONE]\n\n")
            return response
        await response.write(chunk({}, result.finish_reason))
        if options.get("include_usage"):
            data = {"id": cid, "object": "chat.completion.chunk", "created": created,
                    "model": job.model, "system_fingerprint": None, "choices": [],
                    "usage": usage_dict(result)}
            await response.write(b"data: " + json.dumps(data).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
    except (ConnectionResetError, asyncio.CancelledError):
        await handle.cancel()   # the caller went away: stop generating for nobody
        raise
    return response


async def list_models(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    engine.refresh_models()
    data = [model_object(m) for m in sorted(engine.installed(), key=lambda m: (m.kind, m.name))]
    return web.json_response({"object": "list", "data": data})


def model_object(m) -> dict:
    return {"id": m.name, "object": "model", "created": 0, "owned_by": "confab", "kind": m.kind}


async def get_model(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    name = request.match_info["model"]
    model = engine.refresh_models().get(name)
    if model is None:
        from ..errors import UnknownModel
        raise UnknownModel(name)
    return web.json_response(model_object(model))


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model}", get_model)
