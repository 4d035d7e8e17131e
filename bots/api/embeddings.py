"""POST /v1/embeddings in OpenAI's shape, on the installed sentence-embedding model."""
from __future__ import annotations

import base64

from aiohttp import web

from bots.api.app_util import api_origin, result_of
from bots.api.keys import ENGINE
from bots.api.validate import read_json, string
from engine.errors import BadRequest, LimitExceeded
from engine.work.embeddings import MAX_TEXTS, EmbedJob, EmbedResult

# OpenAI's model names, answered by Confab's default embedding model.
OPENAI_EMBEDDING_MODELS = ("text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002")


def parse_inputs(raw, max_chars: int) -> list[str]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise BadRequest("'input' must be a string or a non-empty list of strings.", param="input")
    if not all(isinstance(t, str) for t in raw):
        raise BadRequest("Confab embeds text: 'input' must be a string or a list of strings "
                         "(token arrays are not supported).", param="input")
    if len(raw) > MAX_TEXTS:
        raise LimitExceeded("The number of inputs", len(raw), MAX_TEXTS)
    for i, text in enumerate(raw):
        if not text:
            raise BadRequest(f"input[{i}] is empty.", param="input")
        if len(text) > max_chars:
            raise LimitExceeded(f"input[{i}]", len(text), max_chars, "characters")
    return raw


async def start_embeddings(request: web.Request, body: dict, meta: dict):
    """Check the request and queue its job; the response's options go with it (`meta`)."""
    engine = request.app[ENGINE]
    texts = parse_inputs(body.get("input"), engine.settings.max_prompt_chars)
    model = string(body, "model", "") or ""
    if model in OPENAI_EMBEDDING_MODELS:
        model = ""
    fmt = string(body, "encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise BadRequest("'encoding_format' must be float or base64.", param="encoding_format")
    dimensions = body.get("dimensions")
    if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int)):
        raise BadRequest("'dimensions' must be a whole number.", param="dimensions")
    origin = api_origin(request, body)
    return await engine.submit(EmbedJob(model=model, origin=origin, texts=texts,
                                        meta={**meta, "render": {"format": fmt, "dimensions": dimensions}}))


async def embeddings_response(request: web.Request, job: EmbedJob, result: EmbedResult) -> web.Response:
    options = job.meta.get("render") or {}
    fmt, dimensions = options.get("format", "float"), options.get("dimensions")
    if dimensions is not None and dimensions != result.dim:
        raise BadRequest(f"The model '{result.model}' makes vectors of {result.dim} dimensions; "
                         f"'dimensions' must be {result.dim} or absent.", param="dimensions",
                         job_id=job.id)
    matrix = result.matrix()
    data = []
    for i, row in enumerate(matrix):
        vector = base64.b64encode(row.tobytes()).decode() if fmt == "base64" else row.tolist()
        data.append({"object": "embedding", "index": i, "embedding": vector})
    tokens = result.usage.prompt_tokens
    return web.json_response({"object": "list", "data": data, "model": result.model,
                              "usage": {"prompt_tokens": tokens, "total_tokens": tokens}},
                             headers={"X-Confab-Job-Id": job.id})


async def create_embeddings(request: web.Request) -> web.Response:
    handle = await start_embeddings(request, await read_json(request), {})
    return await embeddings_response(request, handle.job, await result_of(handle))


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/embeddings", create_embeddings)
