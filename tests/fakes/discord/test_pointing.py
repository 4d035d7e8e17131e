"""The discord.py internals the fake is pointed through have not moved."""

from __future__ import annotations

import discord
import discord.gateway
import discord.http
import pytest

from tests.fakes.discord.pointing import check_discord_py_internals, point_discord_py_at

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(25)]


async def test_discord_py_internals_have_not_moved(fake):
    """If this fails after a discord.py upgrade, update point_discord_py_at()."""
    check_discord_py_internals()
    assert isinstance(discord.http.Route.BASE, str)
    base, gateway = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    assert base.startswith("https://discord.com/api/v")
    assert str(gateway).startswith("wss://gateway.discord.gg")
    with point_discord_py_at(fake):
        assert discord.http.Route("GET", "/users/@me").url == fake.api_base + "/users/@me"
        assert str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == fake.gateway_url
    assert discord.http.Route.BASE == base
    assert discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY == gateway
