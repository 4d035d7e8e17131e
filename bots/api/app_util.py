"""Small helpers shared by the API's route modules."""
from __future__ import annotations

import asyncio
import hashlib

from aiohttp import web

from bots.api.keys import API_KEY
from engine.errors import BadRequest, ConfabError
from engine.jobs import Origin


async def result_of(handle):
    """The job's result. A caller that goes away cancels it; a failure carries the job's id (its
    response says X-Confab-Job-Id like any other)."""
    try:
        return await handle.result()
    except asyncio.CancelledError:
        await handle.cancel()
        raise
    except ConfabError as e:
        e.data.setdefault("job_id", handle.id)
        raise


def caller_id(request: web.Request) -> str:
    """A stable, non-secret name for the caller: a hash of its key, or 'anonymous'."""
    key = request.get(API_KEY)
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:12] if key else "anonymous"


def websocket_key(request: web.Request) -> str:
    """Browsers cannot set headers on a WebSocket: OpenAI's Realtime API takes the key as a
    subprotocol, `openai-insecure-api-key.KEY`, beside `realtime`."""
    for protocol in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
        protocol = protocol.strip()
        if protocol.startswith("openai-insecure-api-key."):
            return protocol.removeprefix("openai-insecure-api-key.")
    return ""


def api_origin(request: web.Request, body: dict) -> Origin:
    """Who asks: the caller's key, and the request's own `user` (OpenAI's end-user id) after it."""
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise BadRequest("'user' must be a string.", param="user")
    return Origin(platform="api", user=caller_id(request) + (f"/{user[:64]}" if user else ""))
