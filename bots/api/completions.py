"""POST /v1/completions: the legacy text route (a raw prompt continued), as editors' code
completion uses it: `prompt`, `suffix` (fill in the middle), `echo`, `logprobs`, streamed or not."""
from __future__ import annotations

from aiohttp import web

from bots.api.app_util import api_origin, result_of
from bots.api.chat_request import parse_stop, parse_stream, usage_dict
from bots.api.keys import ENGINE
from bots.api.sse import stream_job
from bots.api.validate import limited_int, number, read_json, string
from engine.errors import BadRequest, PromptTooLong
from engine.jobs import ChatResult, CompletionJob, Origin, Token

REFUSED = {"n": "Confab returns one choice per request; 'n' must be 1.",
           "best_of": "Confab does not do 'best_of'; leave it out or send 1.",
           "logit_bias": "Confab does not apply 'logit_bias'."}


def parse_completion(body: dict, settings, origin: Origin) -> CompletionJob:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise BadRequest("'prompt' must be a string (one prompt per request).", param="prompt")
    if len(prompt) > settings.max_prompt_chars:
        raise PromptTooLong("The prompt", len(prompt), settings.max_prompt_chars, "characters")
    for name, why in REFUSED.items():
        if body.get(name) not in (None, 1):
            raise BadRequest(why, param=name)
    echo = body.get("echo")
    if echo is not None and not isinstance(echo, bool):
        raise BadRequest("'echo' must be true or false.", param="echo")
    stop = parse_stop(body)
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise BadRequest("'seed' must be an integer.", param="seed")
    return CompletionJob(
        model=string(body, "model", "") or "", origin=origin, prompt=prompt,
        suffix=string(body, "suffix"), echo=bool(echo),
        logprobs=number(body, "logprobs", None, 0, 5, integer=True),
        max_tokens=limited_int(body, ("max_tokens",), settings.max_tokens) or 16,
        temperature=number(body, "temperature", None, 0, 2), top_p=number(body, "top_p", None, 0, 1),
        top_k=number(body, "top_k", None, 0, 1000, integer=True), min_p=number(body, "min_p", None, 0, 1),
        stop=stop or [], presence_penalty=number(body, "presence_penalty", None, -2, 2),
        frequency_penalty=number(body, "frequency_penalty", None, -2, 2),
        repeat_penalty=number(body, "repeat_penalty", None, 0, 2), seed=seed)


def legacy_logprobs(entries: list[dict] | None, start: int = 0) -> dict | None:
    """llama.cpp's per-token log-probabilities in the legacy completions shape."""
    if entries is None:
        return None
    out = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    offset = start
    for e in entries:
        token = e.get("token", "")
        out["tokens"].append(token)
        out["token_logprobs"].append(e.get("logprob"))
        out["top_logprobs"].append({t.get("token", ""): t.get("logprob") for t in e.get("top_logprobs") or []})
        out["text_offset"].append(offset)
        offset += len(token)
    return out


def completion_id(job_id: str) -> str:
    return "cmpl-" + job_id.removeprefix("job_")


async def start_completion(request: web.Request, body: dict, meta: dict):
    engine = request.app[ENGINE]
    origin = api_origin(request, body)
    job = parse_completion(body, engine.settings, origin)
    job.meta.update(meta)
    return await engine.submit(job)


async def completion_response(request: web.Request, job: CompletionJob, result: ChatResult) -> web.Response:
    text = (job.prompt if job.echo else "") + result.text
    logprobs = legacy_logprobs(result.logprobs, len(job.prompt) if job.echo else 0) \
        if job.logprobs is not None else None
    return web.json_response({
        "id": completion_id(job.id), "object": "text_completion", "created": int(job.created_at),
        "model": result.model, "system_fingerprint": None,
        "choices": [{"index": 0, "text": text, "logprobs": logprobs,
                     "finish_reason": result.finish_reason}],
        "usage": usage_dict(result)}, headers={"X-Confab-Job-Id": job.id})


async def completions(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    stream, options = parse_stream(body)
    handle = await start_completion(request, body, {})
    job: CompletionJob = handle.job
    if not stream:
        return await completion_response(request, job, await result_of(handle))
    cid, created = completion_id(handle.id), int(job.created_at)
    offset = len(job.prompt) if job.echo else 0

    def chunk(text: str, finish=None, logprobs=None) -> dict:
        data = {"id": cid, "object": "text_completion", "created": created, "model": job.model,
                "system_fingerprint": None,
                "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish}]}
        if options.get("include_usage"):
            data["usage"] = None
        return data

    def on_event(event):
        nonlocal offset
        if isinstance(event, Token):
            lp = legacy_logprobs(event.logprobs, offset) if job.logprobs is not None else None
            offset += len(event.text)
            yield chunk(event.text, logprobs=lp)

    def on_result(result: ChatResult):
        yield chunk("", result.finish_reason)
        if options.get("include_usage"):
            yield {"id": cid, "object": "text_completion", "created": created, "model": job.model,
                   "choices": [], "usage": usage_dict(result)}

    return await stream_job(request, handle, {"X-Confab-Job-Id": handle.id}, on_event=on_event,
                            on_result=on_result, first=[chunk(job.prompt)] if job.echo else [])


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/completions", completions)
