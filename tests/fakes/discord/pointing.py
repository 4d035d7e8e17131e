"""Pointing the real discord.py at the fake: `Route.BASE` and `DiscordWebSocket.DEFAULT_GATEWAY` are
internals, so one check fails loudly when a discord.py upgrade moves them."""

from __future__ import annotations

import contextlib
import inspect
from typing import TYPE_CHECKING, Iterator, List

import yarl

if TYPE_CHECKING:
    from tests.fakes.discord.server import DiscordFake


def check_discord_py_internals() -> None:
    """Fail loudly if the discord.py internals the fake relies on have moved.

    ``discord.http.Route.BASE`` (every REST and webhook URL is built from it) and
    ``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY`` (where the client connects, and
    where it goes back to after a non-resumable INVALID_SESSION) are internals.
    """
    import discord
    import discord.gateway
    import discord.http
    import discord.webhook.async_ as webhook_async

    problems: List[str] = []
    route = getattr(discord.http, "Route", None)
    if route is None:
        problems.append("discord.http.Route is gone")
    else:
        base = getattr(route, "BASE", None)
        if not isinstance(base, str) or not base.startswith("http"):
            problems.append(f"discord.http.Route.BASE is not a URL string: {base!r}")
        else:
            saved = route.BASE
            try:
                route.BASE = "http://127.0.0.1:9/api/v10"
                url = route("GET", "/users/@me").url
                if url != "http://127.0.0.1:9/api/v10/users/@me":
                    problems.append(f"Route no longer builds its URL from Route.BASE (got {url!r})")
            finally:
                route.BASE = saved
    if getattr(webhook_async, "Route", None) is not route:
        problems.append("discord.webhook.async_ no longer uses discord.http.Route (interaction callbacks would escape)")
    ws_cls = getattr(discord.gateway, "DiscordWebSocket", None)
    if ws_cls is None:
        problems.append("discord.gateway.DiscordWebSocket is gone")
    else:
        gw = getattr(ws_cls, "DEFAULT_GATEWAY", None)
        if not isinstance(gw, yarl.URL):
            problems.append(f"DiscordWebSocket.DEFAULT_GATEWAY is not a yarl.URL: {gw!r}")
        try:
            src = inspect.getsource(ws_cls.from_client)
            if "DEFAULT_GATEWAY" not in src:
                problems.append("DiscordWebSocket.from_client no longer reads DEFAULT_GATEWAY")
            src = inspect.getsource(ws_cls.received_message)
            if "resume_gateway_url" not in src:
                problems.append("DiscordWebSocket no longer takes resume_gateway_url from READY")
        except (OSError, TypeError) as exc:  # pragma: no cover - source not available
            problems.append(f"cannot inspect discord.gateway source: {exc}")
    utils = discord.utils
    ctx = getattr(utils, "_ActiveDecompressionContext", None)
    if ctx is None or getattr(ctx, "COMPRESSION_TYPE", None) not in ("zlib-stream", "zstd-stream"):
        problems.append("discord.utils._ActiveDecompressionContext / COMPRESSION_TYPE changed")
    if problems:
        raise AssertionError(
            f"discord.py {discord.__version__} internals used by tests/fakes/discord moved:\n  - "
            + "\n  - ".join(problems)
        )


@contextlib.contextmanager
def point_discord_py_at(fake: "DiscordFake") -> Iterator["DiscordFake"]:
    """Point discord.py's REST base and default gateway at ``fake``; restore on exit.

    Keep it active for the whole life of the client: after a non-resumable INVALID_SESSION
    discord.py reconnects to ``DEFAULT_GATEWAY`` again.
    """
    import discord.gateway
    import discord.http

    check_discord_py_internals()
    if fake.port is None:
        raise RuntimeError("start the fake before pointing discord.py at it")
    saved_base = discord.http.Route.BASE
    saved_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = fake.api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    try:
        yield fake
    finally:
        discord.http.Route.BASE = saved_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = saved_gateway
