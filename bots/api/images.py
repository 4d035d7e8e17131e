"""POST /v1/images/generations, and GET /files/images/NAME for the links it hands out.

A link's file name is unguessable (it is the capability, as in OpenAI's signed URLs) and the
file expires after CONFAB_IMAGE_URL_TTL seconds; links live outside /v1 so that a browser or
a chat platform can fetch them without an API key.
"""
from __future__ import annotations

import asyncio
import base64
from pathlib import Path

from aiohttp import web

from bots.api.app_util import api_origin, result_of
from bots.api.keys import ENGINE, SETTINGS
from bots.api.validate import number, read_json, string
from engine.errors import BadRequest, Gone
from engine.jobs import Origin
from engine.media import imaging
from engine.work.images import ImageJob, ImageResult, check_image_job

FILES_ROUTE = "/files/images"
# OpenAI's image models, answered by the default installed image model.
OPENAI_IMAGE_MODELS = ("dall-e-2", "dall-e-3", "gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5")
MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


def parse_size(value) -> tuple[int, int]:
    if value in (None, "", "auto"):
        return 0, 0
    if isinstance(value, str):
        w, sep, h = value.lower().partition("x")
        if sep and w.strip().isdigit() and h.strip().isdigit():
            return int(w), int(h)
    raise BadRequest("'size' must be WIDTHxHEIGHT (like 512x512) or 'auto'.", param="size")


def parse_generation(body: dict, settings, origin: Origin) -> tuple[ImageJob, str]:
    """The job and the response format, every limit checked (nothing has started yet)."""
    prompt = string(body, "prompt", required=True)
    if body.get("stream"):
        raise BadRequest("Confab does not stream images; leave 'stream' out.", param="stream")
    response_format = string(body, "response_format", "b64_json")
    if response_format not in ("b64_json", "url"):
        raise BadRequest("'response_format' must be 'b64_json' or 'url'.", param="response_format")
    n = body.get("n", 1)
    if n is None:
        n = 1
    if isinstance(n, bool) or not isinstance(n, int):
        raise BadRequest("'n' must be a whole number.", param="n")
    width, height = parse_size(body.get("size"))
    steps = body.get("steps", body.get("num_inference_steps"))
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise BadRequest("'steps' must be a whole number of at least 1.", param="steps")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise BadRequest("'seed' must be an integer.", param="seed")
    priority = body.get("priority")
    if priority is not None and (isinstance(priority, bool) or priority not in (0, 1, 2)):
        raise BadRequest("'priority' must be 0, 1 or 2.", param="priority")
    model = string(body, "model", "") or ""
    if model in OPENAI_IMAGE_MODELS:
        model = ""
    job = ImageJob(model=model, origin=origin, priority=priority, prompt=prompt,
                   negative_prompt=string(body, "negative_prompt", "") or "", n=n,
                   width=width, height=height, steps=steps or 0,
                   guidance=number(body, "guidance_scale", None, 0, 30), seed=seed,
                   format=string(body, "output_format", "png") or "png")
    return check_image_job(job, settings), response_format


def link_base(request: web.Request) -> str:
    public = request.app[SETTINGS].public_url.rstrip("/")
    return public or f"{request.scheme}://{request.host}"


async def start_generation(request: web.Request, body: dict, meta: dict):
    """Check the request and queue its job; the response's format goes with it (`meta`)."""
    engine = request.app[ENGINE]
    origin = api_origin(request, body)
    job, response_format = parse_generation(body, engine.settings, origin)
    job.meta.update(meta, render={"response_format": response_format})
    return await engine.submit(job)


async def generation_response(request: web.Request, job: ImageJob, result: ImageResult) -> web.Response:
    settings = request.app[SETTINGS]
    response_format = (job.meta.get("render") or {}).get("response_format", "b64_json")
    data = []
    for image in result.images:
        if imaging.expired(Path(image.path), settings.image_url_ttl_s):
            raise Gone(f"The pictures of {job.id} were removed: they are kept for "
                       f"{settings.image_url_ttl_s:g} s (CONFAB_IMAGE_URL_TTL).", job_id=job.id)
        if response_format == "url":
            data.append({"url": f"{link_base(request)}{FILES_ROUTE}/{image.filename}",
                         "revised_prompt": None})
        else:
            raw = await asyncio.to_thread(image.read)
            data.append({"b64_json": base64.b64encode(raw).decode(), "revised_prompt": None})
    first = result.images[0] if result.images else None
    return web.json_response({
        "created": int(job.created_at), "data": data, "output_format": job.format,
        "size": f"{first.width}x{first.height}" if first else None,
        "seeds": [i.seed for i in result.images], "steps": result.steps, "model": result.model,
    }, headers={"X-Confab-Job-Id": job.id})


async def generations(request: web.Request) -> web.Response:
    handle = await start_generation(request, await read_json(request), {})
    return await generation_response(request, handle.job, await result_of(handle))


async def serve_file(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    name = request.match_info["name"]
    path = imaging.images_dir(settings) / name
    if not imaging.FILE_NAME.match(name) or not path.is_file():
        raise web.HTTPNotFound(text="No such image; links expire after "
                                    f"{settings.image_url_ttl_s:g} s.")
    if imaging.expired(path, settings.image_url_ttl_s):
        await asyncio.to_thread(path.unlink, missing_ok=True)
        raise web.HTTPNotFound(text="This image link has expired.")
    return web.FileResponse(path, headers={"Content-Type": MIME[path.suffix[1:]],
                                           "Cache-Control": "private, max-age=3600"})


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/images/generations", generations)
    app.router.add_get(FILES_ROUTE + "/{name}", serve_file)
