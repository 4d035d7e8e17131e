"""Streamed answers as OpenAI sends them: server-sent `data: {json}` events, a failure as an
error event, then `data: [DONE]`; a caller that goes away cancels its job."""
from __future__ import annotations

import asyncio
import json
from typing import Any, Callable, Iterable

from aiohttp import web

from bots.api.errors import error_body
from engine.errors import ConfabError

DONE = b"data: [DONE]\n\n"


def sse(data: dict) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"


async def stream_job(request: web.Request, handle, headers: dict, *,
                     on_event: Callable[[Any], Iterable[dict]],
                     on_result: Callable[[Any], Iterable[dict]],
                     first: Iterable[dict] = (), done_after_error: bool = True) -> web.StreamResponse:
    """Send `first`, then what `on_event` makes of each event the job streams, then what
    `on_result` makes of its result (or its error), then [DONE]."""
    response = web.StreamResponse(headers={**headers, "Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
    await response.prepare(request)
    try:
        for data in first:
            await response.write(sse(data))
        async for event in handle:
            for data in on_event(event):
                await response.write(sse(data))
        try:
            result = await handle.result()
        except ConfabError as e:
            await response.write(sse(error_body(e.message, e.kind, e.code)))
            if done_after_error:
                await response.write(DONE)
            return response
        for data in on_result(result):
            await response.write(sse(data))
        await response.write(DONE)
        await response.write_eof()
    except (ConnectionResetError, asyncio.CancelledError):
        await handle.cancel()   # the caller went away: stop working for nobody
        raise
    return response
