"""Small helpers shared by the API's route modules."""
from __future__ import annotations

import asyncio
import hashlib

from aiohttp import web

from ..errors import ConfabError
from .keys import API_KEY


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
