"""`confab run`'s way in: with DISCORD_BOT_TOKEN (and, here, the two URL settings) the adapter
logs in, syncs its commands and connects the gateway where it was told; a wrong token stops it
with words, not a traceback. No model is needed: nothing is asked."""
from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import discord.gateway
import discord.http
import pytest

import bots.discord
from bots.common.commands import Commands
from bots.discord.client import INVITE_PERMISSIONS, invite_url
from bots.discord.settings import DiscordSettings
from engine import ConfigError, Settings
from engine.runtime.engine import Engine
from tests.engine.test_kb import needs_kb
from tests.fakes.discord import DiscordFake

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]


def env_settings(tmp_path, fake: DiscordFake, token: str, **more) -> tuple[Settings, DiscordSettings]:
    """The engine's settings and Discord's, from one environment."""
    env = {"DISCORD_BOT_TOKEN": token, "CONFAB_DISCORD_API_URL": fake.api_base,
           "CONFAB_DISCORD_GATEWAY_URL": fake.gateway_url, "CONFAB_DATA_DIR": str(tmp_path), **more}
    return Settings.from_env(env=env, dotenv=None), DiscordSettings.from_env(env=env, dotenv=None)


async def test_start_connects_where_the_settings_say_and_restores(tmp_path):
    base, gateway = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    async with DiscordFake() as fake:
        settings, door = env_settings(tmp_path, fake, fake.token, CONFAB_DISCORD_GUILD_IDS=None or "")
        engine = Engine(settings, gpu_total=None)
        try:
            adapter = await bots.discord.start(engine, Commands(engine), None, door)
            assert adapter is not None
            try:
                await fake.wait_for_identify(timeout=10)
                assert fake.identify_payloads[0]["intents"] & (1 << 15)       # message content
                assert fake.global_commands and discord.http.Route.BASE == fake.api_base
                await adapter.wait_until_ready(10)
            finally:
                await adapter.stop()
        finally:
            await engine.close()
    assert discord.http.Route.BASE == base
    assert discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY == gateway


async def test_the_readme_invite_link_asks_for_what_confab_uses():
    needed = ("view_channel", "send_messages", "send_messages_in_threads", "read_message_history",
              "attach_files", "send_voice_messages", "use_application_commands")
    assert all(getattr(INVITE_PERMISSIONS, name) for name in needed)
    assert not INVITE_PERMISSIONS.administrator
    readme = (Path(__file__).parents[3] / "README.md").read_text()
    link = invite_url("APPLICATION_ID")
    assert "scope=bot+applications.commands" in link and link in readme


async def test_start_logs_the_invite_link_with_the_application_id(tmp_path, caplog):
    caplog.set_level("INFO", logger="bots.discord.client")
    async with DiscordFake() as fake:
        settings, door = env_settings(tmp_path, fake, fake.token)
        engine = Engine(settings, gpu_total=None)
        try:
            adapter = await bots.discord.start(engine, Commands(engine), None, door)
            try:
                await adapter.wait_until_ready(10)
            finally:
                await adapter.stop()
        finally:
            await engine.close()
    assert invite_url(fake.application_id) in caplog.text


async def test_commands_sync_per_guild_when_configured(tmp_path):
    async with DiscordFake() as fake:
        settings, door = env_settings(tmp_path, fake, fake.token, CONFAB_DISCORD_GUILD_IDS=fake.guild_id)
        engine = Engine(settings, gpu_total=None)
        try:
            adapter = await bots.discord.start(engine, Commands(engine), None, door)
            await adapter.stop()
        finally:
            await engine.close()
        assert not fake.global_commands
        assert {"ask", "queue"} <= {c["name"] for c in fake.guild_commands[fake.guild_id]}


async def test_no_token_no_adapter_and_a_wrong_token_says_so(tmp_path):
    async with DiscordFake() as fake:
        settings, door = env_settings(tmp_path, fake, "")
        engine = Engine(settings, gpu_total=None)
        try:
            assert await bots.discord.start(engine, Commands(engine), None, door) is None
        finally:
            await engine.close()
        settings, door = env_settings(tmp_path, fake, "wrong-token")
        engine = Engine(settings, gpu_total=None)
        try:
            with pytest.raises(ConfigError, match="DISCORD_BOT_TOKEN"):
                await asyncio.wait_for(bots.discord.start(engine, Commands(engine), None, door), 20)
        finally:
            await engine.close()
        assert fake.identify_count == 0


@needs_kb
async def test_support_channels_from_the_channels_file(tmp_path):
    """CONFAB_CHANNELS_FILE naming a Discord channel turns the support desk on; a file with
    Slack channels only leaves Discord without one."""
    import json
    async with DiscordFake() as fake:
        for channels, on in (([{"platform": "discord", "channel": fake.support_channel_id}], True),
                             ([{"platform": "slack", "channel": "C0123ABC"}], False)):
            path = tmp_path / "channels.json"
            path.write_text(json.dumps({"support_channels": channels}))
            settings, door = env_settings(tmp_path, fake, fake.token, CONFAB_CHANNELS_FILE=str(path))
            engine = Engine(settings, gpu_total=None)
            try:
                adapter = await bots.discord.start(engine, Commands(engine), None, door)
                try:
                    assert (adapter.support is not None) is on
                    if on:
                        assert adapter.support.where(adapter.client.get_partial_messageable(
                            int(fake.support_channel_id))) == (fake.support_channel_id, "")
                finally:
                    await adapter.stop()
                # the knowledge base the desk opened is closed with the adapter: its thread is gone
                assert not [t for t in threading.enumerate() if t.name.startswith("confab-kb")]
            finally:
                await engine.close()
