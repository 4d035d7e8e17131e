"""What the Discord fake's self-tests share: the fake, a real discord.py client wired to it, bounded
waits on what the client sees, and test data."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import zlib

import discord
import discord.gateway
import discord.http
import pytest_asyncio
from discord import app_commands

from tests.fakes.discord import DiscordFake
from tests.fakes.discord.pointing import point_discord_py_at

T = 10  # seconds: the bound of every wait


def png(width: int = 3, height: int = 2) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


OGG = b"OggS\x00\x02" + bytes(range(64)) * 4  # opaque audio bytes; the fake does not decode them


class Bot(discord.Client):
    def __init__(self, *, message_content: bool = True) -> None:
        intents = discord.Intents.default()
        intents.message_content = message_content
        # guild_ready_timeout: discord.py waits this long after the last GUILD_CREATE.
        super().__init__(intents=intents, guild_ready_timeout=0.1)
        self.tree = app_commands.CommandTree(self)
        self.readies: asyncio.Queue = asyncio.Queue()
        self.resumes: asyncio.Queue = asyncio.Queue()
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.answered: asyncio.Queue = asyncio.Queue()

        @self.tree.command(name="ask", description="Ask Confab a question")
        @app_commands.describe(question="What to ask")
        async def ask(interaction: discord.Interaction, question: str) -> None:
            await interaction.response.defer(thinking=True)
            msg = await interaction.followup.send(f"answer to: {question}", wait=True)
            await self.answered.put((interaction, msg))

    async def on_ready(self) -> None:
        await self.readies.put(self.user)

    async def on_resumed(self) -> None:
        await self.resumes.put(True)

    async def on_message(self, message: discord.Message) -> None:
        await self.inbox.put(message)


async def next_item(queue: asyncio.Queue, what: str, predicate=None):
    async def get():
        while True:
            item = await queue.get()
            if predicate is None or predicate(item):
                return item
    try:
        return await asyncio.wait_for(get(), T)
    except asyncio.TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def from_user(message: discord.Message) -> bool:
    return not message.author.bot


@pytest_asyncio.fixture
async def fake():
    async with DiscordFake() as f:
        yield f


@contextlib.asynccontextmanager
async def running(fake: DiscordFake, **kw):
    with point_discord_py_at(fake):
        bot = Bot(**kw)
        task = asyncio.create_task(bot.start(fake.token))
        try:
            await next_item(bot.readies, "on_ready")
            yield bot
        finally:
            await bot.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 5)


AUTH = {"Authorization": "Bot fake-bot-token", "User-Agent": "DiscordBot (https://example.invalid, 1)"}
