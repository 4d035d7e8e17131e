"""A conversation's memory on Discord: the reply chain above a message, or a thread's recent
messages, as (role, text) turns, oldest first, bounded by CONFAB_HISTORY_MESSAGES."""
from __future__ import annotations

import asyncio
import logging
import re

import discord

log = logging.getLogger(__name__)

FETCH_TIMEOUT_S = 10.0
MENTION = re.compile(r"<@!?(\d+)>")


def clean(text: str, bot_id: int) -> str:
    """A message's text without the mentions of the bot."""
    return MENTION.sub(lambda m: "" if int(m.group(1)) == bot_id else m.group(0), text or "").strip()


def turn_of(message: discord.Message, bot_id: int) -> tuple[str, str] | None:
    text = clean(message.content, bot_id)
    if not text:
        return None
    return ("assistant" if message.author.id == bot_id else "user"), text


async def _referenced(client: discord.Client, message: discord.Message) -> discord.Message | None:
    ref = message.reference
    if ref is None or ref.message_id is None:
        return None
    if isinstance(ref.resolved, discord.Message):
        return ref.resolved
    cached = next((m for m in reversed(client.cached_messages) if m.id == ref.message_id), None)
    if cached is not None:
        return cached
    if not isinstance(message.channel, discord.abc.Messageable) or ref.channel_id != message.channel.id:
        return None
    try:
        return await asyncio.wait_for(message.channel.fetch_message(ref.message_id), FETCH_TIMEOUT_S)
    except (discord.NotFound, discord.Forbidden, asyncio.TimeoutError):
        return None
    except discord.HTTPException as e:
        log.warning("could not fetch message %s of a reply chain: %s", ref.message_id, e)
        return None


async def reply_chain(client: discord.Client, message: discord.Message, limit: int) -> list[tuple[str, str]]:
    """The messages `message` replies to, up the chain, at most `limit` turns."""
    turns: list[tuple[str, str]] = []
    seen = {message.id}
    current = message
    for _ in range(max(0, limit) * 2):          # skip empty messages, but never loop forever
        if len(turns) >= limit:
            break
        parent = await _referenced(client, current)
        if parent is None or parent.id in seen:
            break
        seen.add(parent.id)
        turn = turn_of(parent, client.user.id)
        if turn:
            turns.append(turn)
        current = parent
    return list(reversed(turns))


async def thread_history(client: discord.Client, message: discord.Message, limit: int) -> list[tuple[str, str]]:
    """The thread's messages before `message`, at most `limit` turns."""
    turns: list[tuple[str, str]] = []
    try:
        async def collect():
            async for m in message.channel.history(limit=min(100, limit * 2), before=message):
                if m.author.bot and m.author.id != client.user.id:
                    continue
                turn = turn_of(m, client.user.id)
                if turn:
                    turns.append(turn)
                if len(turns) >= limit:
                    break
        await asyncio.wait_for(collect(), FETCH_TIMEOUT_S)
    except (discord.Forbidden, asyncio.TimeoutError) as e:
        log.warning("could not read thread %s: %s", message.channel.id, e)
    return list(reversed(turns))
