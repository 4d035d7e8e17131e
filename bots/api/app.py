"""The OpenAI-compatible HTTP API on aiohttp, plus /healthz and /metrics."""
from __future__ import annotations

import hmac
import time

from aiohttp import web

from bots.api import audio, chat, completions, dashboard, embeddings, images, jobs, realtime, talk, templates
from bots.api.app_util import caller_id, websocket_key  # noqa: F401  (caller_id re-exported)
from bots.api.errors import error_response, openai_errors
from bots.api.keys import API_KEY, ENGINE, LARGER_BODIES, SETTINGS, STREAMED_UPLOADS
from engine.runtime.engine import Engine

# Each module has setup(app); a modality adds its routes by adding its module here, one a line.
ROUTE_MODULES = [
    chat,
    completions,
    audio,
    images,
    jobs,
    embeddings,
    templates,
    dashboard,
    realtime,
    talk,
]


@web.middleware
async def require_key(request: web.Request, handler):
    if request.path.startswith("/v1"):
        keys = request.app[SETTINGS].api_keys
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else websocket_key(request)
        if keys:
            if not token or not any(hmac.compare_digest(token, k) for k in keys):
                return error_response(401, "Missing or wrong API key. Send it as "
                                      "'Authorization: Bearer KEY'.", "invalid_request_error",
                                      "invalid_api_key")
        request[API_KEY] = token
    return await handler(request)


@web.middleware
async def body_limit(request: web.Request, handler):
    """Refuse an oversize body with 413 after draining it, so the client reads the answer
    instead of a reset connection."""
    if request.path in request.app[STREAMED_UPLOADS]:
        return await handler(request)
    settings = request.app[SETTINGS]
    larger = request.app[LARGER_BODIES].get(request.path)
    limit = larger(settings) if larger else settings.max_body_bytes
    length = request.content_length
    if request.body_exists and length is not None and length > limit:
        drained, deadline = 0, time.monotonic() + 30
        while drained < 8 * limit and time.monotonic() < deadline:
            chunk = await request.content.read(2**16)
            if not chunk:
                break
            drained += len(chunk)
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=length)
    return await handler(request)


async def healthz(request: web.Request) -> web.Response:
    engine: Engine = request.app[ENGINE]
    here = engine.dispatcher
    return web.json_response({"status": "ok", "queue": len(here.waiting), "running": len(here.running),
                              "models_loaded": here.resident_names()})


async def metrics(request: web.Request) -> web.Response:
    engine: Engine = request.app[ENGINE]
    return web.Response(body=engine.metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4"})


def create_app(engine: Engine) -> web.Application:
    settings = engine.settings
    app = web.Application(middlewares=[openai_errors, require_key, body_limit],
                          client_max_size=settings.max_body_bytes)
    app[ENGINE] = engine
    app[SETTINGS] = settings
    app[STREAMED_UPLOADS] = set()
    app[LARGER_BODIES] = {}
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    for module in ROUTE_MODULES:
        module.setup(app)
    return app
