"""Push-to-talk on a terminal: Enter starts recording, Enter (or a pause in speech) stops it;
Enter while the answer plays is barge-in: playback stops, the rest is cancelled, and a new
turn starts recording at once. Ctrl-D quits."""
from __future__ import annotations

import asyncio
import sys
from typing import TextIO

from engine import Token
from engine.pipelines import Transcript

from .loop import VoiceLoop


class Keys:
    """Each Enter on stdin, as an awaitable event; None at end of input."""

    def __init__(self, stdin: TextIO = sys.stdin):
        self.stdin = stdin
        self._pending: asyncio.Future | None = None

    def next(self) -> asyncio.Future:
        if self._pending is None or self._pending.done():
            loop = asyncio.get_running_loop()
            self._pending = asyncio.ensure_future(loop.run_in_executor(None, self.stdin.readline))
        return self._pending

    def take(self) -> str | None:
        fut, self._pending = self._pending, None
        line = fut.result() if fut is not None else ""
        return line if line else None


async def push_to_talk(loop: VoiceLoop, mic, keys: Keys, out: TextIO = sys.stdout,
                       max_turn_s: float = 60.0) -> None:
    def say(text: str, end: str = "\n") -> None:
        out.write(text + end)
        out.flush()

    def on_event(ev) -> None:
        if isinstance(ev, Transcript):
            say(f"you: {ev.text}\nconfab: ", end="")
        elif isinstance(ev, Token):
            say(ev.text, end="")

    loop.on_event = on_event
    recording_now = False
    while True:
        if not recording_now:
            say("[Enter] to talk, Ctrl-D to quit")
            await keys.next()
            if keys.take() is None:
                return
        recording_now = False
        mic.start()
        say("listening… [Enter] to stop")
        ended = asyncio.ensure_future(asyncio.to_thread(mic.ended.wait, max_turn_s))
        key = keys.next()
        await asyncio.wait({ended, key}, return_when=asyncio.FIRST_COMPLETED)
        pcm = mic.stop()
        mic.ended.set()
        if key.done() and keys.take() is None:
            return
        turn = asyncio.ensure_future(loop.turn(pcm))
        while not turn.done():
            key = keys.next()
            await asyncio.wait({turn, key}, return_when=asyncio.FIRST_COMPLETED)
            if key.done() and not turn.done():
                if keys.take() is None:
                    await loop.barge_in()
                    await turn
                    return
                await loop.barge_in()      # barge-in: stop, cancel, and listen again
                recording_now = True
        result = turn.result()
        say("")
        if result.error:
            say(result.error)
        elif result.interrupted:
            say("(interrupted)")
        elif result.note:
            say(f"({result.note})")
