"""Confab on Discord (discord.py): slash commands, mentions, DMs, reply chains, voice messages.

`start` is the adapter's entry in `bots.adapters.EXTENSIONS`: it connects when
DISCORD_BOT_TOKEN is set and returns the running adapter (with `stop()`), else None.
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)


async def start(engine, commands, app):
    settings = engine.settings
    if not settings.discord_bot_token:
        return None
    try:
        from bots.discord.adapter import DiscordAdapter
    except ImportError as e:
        log.error("DISCORD_BOT_TOKEN is set but discord.py is missing (%s). Install it with: "
                  "pip install 'confab-bot[discord]'", e)
        return None
    import discord
    adapter = DiscordAdapter(engine, commands)
    try:
        await adapter.start()
    except discord.LoginFailure:
        log.error("Discord refused DISCORD_BOT_TOKEN: it is wrong or was reset. Copy the bot's token "
                  "again from the developer portal (Bot > Reset Token).")
        return None
    except (discord.HTTPException, OSError) as e:
        log.error("Could not reach Discord (%s): %s", settings.discord_api_url or "discord.com", e)
        return None
    return adapter
