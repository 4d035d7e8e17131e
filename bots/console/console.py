"""A terminal chat on the shared command set: plain text asks, /commands work, answers stream."""
from __future__ import annotations

import asyncio
import getpass
import sys
import uuid
from typing import AsyncIterator, TextIO

from engine import Engine, Origin

from ..common.commands import Commands, Request


class ConsoleReply:
    """Answers printed to a terminal: streamed token by token, files saved to disk."""

    def __init__(self, out: TextIO, files_dir, stdin: TextIO | None = None):
        self.out = out
        self.files_dir = files_dir
        self.stdin = stdin

    async def ask(self, prompt: str) -> str | None:
        """One line typed at a prompt (commands that collect slots, like /promo); None at
        end of input."""
        if self.stdin is None:
            return None
        self._print(prompt, end="")
        line = await asyncio.get_running_loop().run_in_executor(None, self.stdin.readline)
        return line.rstrip("\n") if line else None

    def _print(self, text: str, end: str = "\n") -> None:
        self.out.write(text + end)
        self.out.flush()

    async def say(self, text: str) -> object:
        self._print(text)
        return None

    async def private(self, text: str) -> object:
        self._print(text)
        return None

    async def update(self, ref: object, text: str) -> None:
        self._print(text)

    async def stream(self, chunks: AsyncIterator[str], status: str = "") -> str:
        parts = []
        async for chunk in chunks:
            parts.append(chunk)
            self._print(chunk, end="")
        self._print("")
        return "".join(parts)

    async def send_file(self, data: bytes, filename: str, title: str = "", voice: bool = False,
                        duration_s: float = 0.0) -> object:
        self.files_dir.mkdir(parents=True, exist_ok=True)
        path = self.files_dir / filename
        await asyncio.to_thread(path.write_bytes, data)
        self._print(f"[{title or 'file'} saved to {path}]")
        return path


class Console:
    def __init__(self, engine: Engine, commands: Commands, stdin: TextIO = sys.stdin,
                 stdout: TextIO = sys.stdout, user: str | None = None, prompt: str = "you> "):
        self.engine, self.commands = engine, commands
        self.stdin, self.stdout, self.prompt = stdin, stdout, prompt
        self.user = user or getpass.getuser()
        self.session = uuid.uuid4().hex[:8]
        self.reply = ConsoleReply(stdout, engine.settings.data_path / "console", stdin)

    def origin(self) -> Origin:
        # One person at their own terminal: a direct conversation, so class 0.
        return Origin(platform="console", user=self.user, channel=self.session, is_dm=True)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.stdout.write("Confab console. Type a question, or /help. Ctrl-D quits.\n")
        while True:
            self.stdout.write(self.prompt)
            self.stdout.flush()
            line = await loop.run_in_executor(None, self.stdin.readline)
            if not line:
                self.stdout.write("\n")
                return
            text = line.strip()
            if not text:
                continue
            if text in ("/quit", "/exit"):
                return
            request = Request(self.origin(), f"console:{self.user}:{self.session}", text)
            await self.commands.handle(request, self.reply)
