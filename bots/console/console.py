"""A terminal chat on the shared command set: plain text asks, /commands work, answers stream.

The terminal's stand-ins for chat buttons: while an answer streams or a picture is being drawn,
a `/cancel` line stops it at once (other lines wait their turn); `/reroll` draws the last
picture again with a new seed.
"""
from __future__ import annotations

import asyncio
import collections
import getpass
import signal
import sys
import uuid
from typing import AsyncIterator, TextIO

from bots.common.commands import Commands, Request
from bots.common.image_commands import reroll
from engine import ConfabError, Engine, Origin
from engine.messages import explain

# /reroll before any picture was drawn
NOTHING_TO_REROLL = "There is no picture to draw again yet: start with /imagine PROMPT."



class ConsoleReply:
    """Answers printed to a terminal: streamed token by token, files saved to disk."""

    def __init__(self, out: TextIO, files_dir, stdin: TextIO | None = None):
        self.out = out
        self.files_dir = files_dir
        self.stdin = stdin
        self.backlog: collections.deque[str] = collections.deque()   # read ahead, not yet handled
        self._reading: asyncio.Future | None = None      # the one read of stdin under way
        self.drawing: str | None = None     # the picture job a /cancel line stops
        self.cancellable = asyncio.Event()  # set while a picture draws or an answer streams
        self.last_picture = None            # ImagineSpec that /reroll draws again

    async def ask(self, prompt: str) -> str | None:
        """One line typed at a prompt (commands that collect slots, like /promo); None at
        end of input."""
        if self.stdin is None:
            return None
        self._print(prompt, end="")
        line = await self.next_line()
        return line.rstrip("\n") if line else None

    def pending_line(self) -> asyncio.Future:
        """The read of stdin under way, started if there is none: never two at once, and none
        left behind unless someone waits at a prompt (a blocked read would hold up exit)."""
        if self._reading is None:
            self._reading = asyncio.get_running_loop().run_in_executor(None, self.stdin.readline)
        return self._reading

    def take_line(self) -> str:
        line, self._reading = self._reading.result(), None
        return line

    async def next_line(self) -> str:
        """The next line typed ('' at end of input), read-ahead lines first."""
        if self.backlog:
            return self.backlog.popleft()
        await asyncio.wait({self.pending_line()})
        return self.take_line()

    async def image_controls(self, ref: object, job_id: str, spec, done: bool) -> None:
        """The terminal's Cancel and Re-roll buttons, as lines to type."""
        if done:
            self.drawing, self.last_picture = None, spec
            self.cancellable.clear()
            self._print("(/reroll draws it again with a new seed)")
        else:
            self.drawing = job_id
            self.cancellable.set()
            self._print("(/cancel stops it)")

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
        self.cancellable.set()
        try:
            async for chunk in chunks:
                parts.append(chunk)
                self._print(chunk, end="")
        finally:
            self.cancellable.clear()
            self._print("")
        return "".join(parts)

    async def send_file(self, data: bytes, filename: str, title: str = "", voice: bool = False,
                        duration_s: float = 0.0, waveform: bytes = b"") -> object:
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

    def request(self, text: str) -> Request:
        return Request(self.origin(), f"console:{self.user}:{self.session}", text)

    async def _command(self, text: str) -> None:
        try:
            if text.split()[0] != "/reroll":
                await self.commands.handle(self.request(text), self.reply)
            elif self.reply.last_picture is None:
                await self.reply.private(NOTHING_TO_REROLL)
            else:
                await reroll(self.commands, self.request(text), self.reply,
                             self.reply.last_picture.payload())
        except ConfabError as e:
            await self.reply.say(explain(e))
        finally:
            self.reply.drawing = None
            self.reply.cancellable.clear()

    async def _while_running(self, command: asyncio.Task) -> None:
        """Wait for a command; while it draws a picture or streams an answer, read ahead:
        `/cancel` stops that job at once, other lines wait their turn."""
        reply = self.reply
        interrupted = self._ctrl_c_cancels(command)
        try:
            await self._read_ahead(command)
        finally:
            if interrupted:
                asyncio.get_running_loop().remove_signal_handler(signal.SIGINT)
        await command

    def _ctrl_c_cancels(self, command: asyncio.Task) -> bool:
        """While a command runs, Ctrl-C cancels its job, not the program (terminals only: the
        main thread of a Unix loop)."""
        loop = asyncio.get_running_loop()

        def cancel() -> None:
            if self.reply.cancellable.is_set():
                target = f"/cancel {self.reply.drawing}" if self.reply.drawing else "/cancel"
                loop.create_task(self.commands.handle(self.request(target), self.reply))
        try:
            loop.add_signal_handler(signal.SIGINT, cancel)
        except (NotImplementedError, RuntimeError, ValueError):
            return False
        return True

    async def _read_ahead(self, command: asyncio.Task) -> None:
        reply = self.reply
        while not command.done():
            cancellable = asyncio.ensure_future(reply.cancellable.wait())
            await asyncio.wait({command, cancellable}, return_when=asyncio.FIRST_COMPLETED)
            cancellable.cancel()
            if command.done():
                break
            read = reply.pending_line()
            await asyncio.wait({command, read}, return_when=asyncio.FIRST_COMPLETED)
            if not read.done():
                continue                      # the read stays under way for the next prompt
            line = reply.take_line()
            if line.strip() == "/cancel" and reply.cancellable.is_set():
                # a streaming answer is the person's latest job, which a bare /cancel stops
                target = f"/cancel {reply.drawing}" if reply.drawing else "/cancel"
                await self.commands.handle(self.request(target), reply)
            else:
                reply.backlog.append(line)
                if not line:                  # end of input: let the job finish
                    await asyncio.wait({command})

    def tiny_model_notice(self) -> str:
        """Said first when the chat model is the tiny offline one, so nobody judges Confab by it."""
        try:
            model = self.engine.resolve_model(self.engine.settings.default_chat_model or None, "chat")
        except ConfabError:
            return ""
        if not model.source.startswith("pypi:"):   # the offline defaults ship inside packages
            return ""
        return (f"Chat runs on {model.name}, the tiny offline model (135M parameters): it gets "
                "simple facts wrong about a third of the time. For real answers pull a real model, "
                "e.g. `confab models pull qwen3-4b`, and set CONFAB_CHAT_MODEL=qwen3-4b.\n")

    async def run(self) -> None:
        self.stdout.write("Confab console. Type a question, or /help. Ctrl-D quits.\n")
        self.stdout.write(self.tiny_model_notice())
        while True:
            self.stdout.write(self.prompt)
            self.stdout.flush()
            line = await self.reply.next_line()
            if not line:
                self.stdout.write("\n")
                return
            text = line.strip()
            if not text:
                continue
            if text in ("/quit", "/exit"):
                return
            await self._while_running(asyncio.create_task(self._command(text)))
