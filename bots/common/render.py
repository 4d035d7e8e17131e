"""Streaming text into chat messages: throttled edits and splitting at the platform's limit."""
from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator, Awaitable, Callable

from engine import Token


def split_message(text: str, limit: int) -> list[str]:
    """Split text into pieces of at most `limit` characters, at a paragraph, line or word
    boundary where one is near, never inside a code fence's opening line."""
    pieces = []
    while len(text) > limit:
        cut = max(text.rfind("\n\n", 0, limit), text.rfind("\n", 0, limit), text.rfind(" ", 0, limit))
        if cut < limit // 2:
            cut = limit
        pieces.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    pieces.append(text)
    return [p for p in pieces if p] or [""]


class ThrottledStream:
    """Feed it tokens; it posts a placeholder, then edits it at most once per `interval`,
    moving on to a new message when the text outgrows `limit`."""

    def __init__(self, post: Callable[[str], Awaitable[object]],
                 edit: Callable[[object, str], Awaitable[None]], limit: int,
                 interval: float = 1.0, placeholder: str = "…", cursor: str = " ▌",
                 clock: Callable[[], float] = time.monotonic):
        self.post, self.edit, self.limit = post, edit, limit
        self.interval, self.placeholder, self.cursor, self.clock = interval, placeholder, cursor, clock
        self.refs: list[object] = []
        self.shown: list[str] = []
        self.edits = 0

    async def run(self, chunks: AsyncIterator[str]) -> str:
        text = ""
        last = 0.0
        if not self.refs:
            self.refs.append(await self.post(self.placeholder))
            self.shown.append(self.placeholder)
            last = self.clock()
        async for chunk in chunks:
            text += chunk
            if self.clock() - last >= self.interval:
                await self._render(text, final=False)
                last = self.clock()
        await self._render(text, final=True)
        return text

    async def _render(self, text: str, final: bool) -> None:
        pieces = split_message(text or ("(no answer)" if final else self.placeholder), self.limit - len(self.cursor))
        for i, piece in enumerate(pieces):
            body = piece if final or i < len(pieces) - 1 else piece + self.cursor
            if i < len(self.refs):
                if self.shown[i] != body:
                    await self.edit(self.refs[i], body)
                    self.shown[i] = body
                    self.edits += 1
            else:
                self.refs.append(await self.post(body))
                self.shown.append(body)


async def tokens_of(handle) -> AsyncIterator[str]:
    """The text tokens of a job's event stream."""
    async for event in handle:
        if isinstance(event, Token):
            yield event.text


async def with_heartbeat(coro, every: float, beat: Callable[[], Awaitable[None]]):
    """Run `coro`, calling `beat` every `every` seconds until it ends (typing indicators)."""
    task = asyncio.ensure_future(coro)
    while not task.done():
        done, _ = await asyncio.wait({task}, timeout=every)
        if not done:
            await beat()
    return task.result()
