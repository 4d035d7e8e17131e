"""GET /talk: a page to talk to Confab from a browser. Hold the button (or the space bar) to talk,
let go to send; the answer plays as it arrives; pressing again while it plays interrupts.

The page is plain HTML and JavaScript with no build step. It is a client of the Realtime API
(/v1/realtime) with the caller's key, which it keeps in the tab's sessionStorage and sends as the
WebSocket subprotocol browsers can set. The page itself needs no key: it holds no data.
"""
from __future__ import annotations

from importlib import resources

from aiohttp import web

FILES = {"talk.html": "text/html", "talk.js": "text/javascript", "talk-mic.js": "text/javascript"}
HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "connect-src 'self'; media-src 'self' blob:; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'none'",
    "Permissions-Policy": "microphone=(self)",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


async def talk_file(request: web.Request) -> web.Response:
    name = request.match_info.get("name", "talk.html")
    if name not in FILES:
        raise web.HTTPNotFound()
    text = resources.files("bots.api").joinpath(f"static/{name}").read_text("utf-8")
    return web.Response(text=text, content_type=FILES[name], headers=HEADERS)


def setup(app: web.Application) -> None:
    app.router.add_get("/talk", talk_file)
    app.router.add_get("/talk/{name}", talk_file)
