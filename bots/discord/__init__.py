"""Confab on Discord (discord.py): slash commands, mentions, DMs, reply chains, voice messages.

`start` is the adapter's entry in `bots.adapters.EXTENSIONS`: it connects when
DISCORD_BOT_TOKEN is set and returns the running adapter (with `stop()`), else None. A setting
that cannot work (a wrong token, an unreachable CONFAB_DISCORD_API_URL, discord.py missing) is
a ConfigError that says which, and `confab run` stops with it.
"""
from __future__ import annotations

from bots.adapters import door_modules
from bots.common.support import build_support_desk
from bots.discord.settings import DiscordSettings
from engine import ConfigError

SETTINGS = DiscordSettings      # read with the engine's, and given to `start`


async def start(engine, commands, app, settings: DiscordSettings | None = None):
    """`settings`: Discord's own (none: Discord is not configured)."""
    settings = settings or DiscordSettings()
    if not settings.discord_bot_token:
        return None
    (discord_adapter,) = door_modules("DISCORD_BOT_TOKEN", "discord.py", "discord", "bots.discord.adapter")
    import discord      # there now: the adapter brought it
    desk = None
    if engine.settings.channels_file:
        desk = build_support_desk(engine, platform="discord")
    adapter = discord_adapter.DiscordAdapter(engine, commands, settings, desk=desk)
    adapter.owned_desk = desk        # opened here, so closed with the adapter
    try:
        await adapter.start()
    except discord.LoginFailure:
        raise ConfigError("Discord refused DISCORD_BOT_TOKEN: it is wrong or was reset. Copy the bot's "
                          "token again from the developer portal (Bot > Reset Token).") from None
    except (discord.HTTPException, OSError) as e:
        where = settings.discord_api_url or "https://discord.com/api/v10"
        raise ConfigError(f"Could not reach Discord at {where} (CONFAB_DISCORD_API_URL): {e}") from None
    return adapter
