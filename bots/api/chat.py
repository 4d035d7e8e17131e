"""POST /v1/chat/completions and GET /v1/models."""
from __future__ import annotations

from aiohttp import web

from bots.api.app_util import api_origin, result_of
from bots.api.chat_request import completion_id, parse_chat, parse_stream, stream_chat, usage_dict
from bots.api.keys import ENGINE
from bots.api.validate import number, read_json
from bots.api.vision import answer_prefix, has_image_parts, image_headers, start_vision
from engine.errors import BadRequest, UnknownModel
from engine.jobs import ChatResult


async def start_chat(request: web.Request, body: dict, meta: dict):
    """Check the request and queue its job, with `meta` (see bots/api/jobs.py); images go to
    the vision model (or OCR)."""
    if has_image_parts(body.get("messages")):
        return await start_vision(request, body, meta)
    engine = request.app[ENGINE]
    origin = api_origin(request, body)
    job = parse_chat(body, engine.settings, origin)
    job.meta.update(meta)
    return await engine.submit(job)


async def chat_response(request: web.Request, job, result: ChatResult) -> web.Response:
    """The chat.completion for a finished job (a vision job's too: see bots/api/vision.py)."""
    return web.json_response({
        "id": completion_id(job.id), "object": "chat.completion", "created": int(job.created_at),
        "model": result.model, "system_fingerprint": None,
        "choices": [{"index": 0, "message": message_of(job, result),
                     "logprobs": {"content": result.logprobs} if result.logprobs else None,
                     "finish_reason": result.finish_reason}],
        "usage": usage_dict(result)}, headers={"X-Confab-Job-Id": job.id, **image_headers(job)})


def message_of(job, result: ChatResult) -> dict:
    text = answer_prefix(job) + result.text
    message = {"role": "assistant", "content": text if text or not result.tool_calls else None}
    if result.tool_calls:
        message["tool_calls"] = result.tool_calls
    return message


MAX_CHOICES = 8


async def several_choices(request: web.Request, body: dict, n: int) -> web.Response:
    """`n` choices: one job each (the model's slots run them side by side), each with its own
    seed when the request gives one, so the choices differ as OpenAI's do."""
    seed = body.get("seed")
    handles = []
    try:
        for i in range(n):
            one = dict(body, n=1)
            if isinstance(seed, int) and not isinstance(seed, bool):
                one["seed"] = seed + i
            handles.append(await start_chat(request, one, {}))
        results = [await result_of(h) for h in handles]
    except BaseException:
        for h in handles:
            await h.cancel()
        raise
    first = handles[0].job
    usage = {"prompt_tokens": results[0].usage.prompt_tokens,
             "completion_tokens": sum(r.usage.completion_tokens for r in results)}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return web.json_response({
        "id": completion_id(first.id), "object": "chat.completion", "created": int(first.created_at),
        "model": results[0].model, "system_fingerprint": None,
        "choices": [{"index": i, "message": message_of(h.job, r),
                     "logprobs": {"content": r.logprobs} if r.logprobs else None,
                     "finish_reason": r.finish_reason} for i, (h, r) in enumerate(zip(handles, results))],
        "usage": usage}, headers={"X-Confab-Job-Id": first.id,
                                  "X-Confab-Job-Ids": ",".join(h.id for h in handles)})


def choices_asked(body: dict, stream: bool, images: bool) -> int:
    n = number(body, "n", 1, 1, MAX_CHOICES, integer=True)
    if n > 1 and stream:
        raise BadRequest("Confab streams one choice at a time; ask for n > 1 without 'stream'.",
                         param="n")
    if n > 1 and images:
        raise BadRequest("Questions about images get one choice; 'n' must be 1.", param="n")
    return n


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    stream, options = parse_stream(body)
    n = choices_asked(body, stream, has_image_parts(body.get("messages")))
    if n > 1:
        return await several_choices(request, body, n)
    handle = await start_chat(request, body, {})
    if not stream:
        return await chat_response(request, handle.job, await result_of(handle))
    job = handle.job
    return await stream_chat(request, handle, {"X-Confab-Job-Id": handle.id, **image_headers(job)},
                             bool(options.get("include_usage")), prefix=answer_prefix(job))


async def list_models(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    engine.refresh_models()
    data = [model_object(m) for m in sorted(engine.installed(), key=lambda m: (m.kind, m.name))]
    return web.json_response({"object": "list", "data": data})


def model_object(m) -> dict:
    out = {"id": m.name, "object": "model", "created": 0, "owned_by": "confab", "kind": m.kind}
    if m.parent:   # a LoRA adapter, listed as vLLM lists them: its base is its parent
        out["parent"] = m.parent
    return out


async def get_model(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    name = request.match_info["model"]
    model = engine.refresh_models().get(name)
    if model is None:
        raise UnknownModel(name)
    return web.json_response(model_object(model))


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model}", get_model)
