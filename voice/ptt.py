"""The push-to-talk loop: a key starts a turn, its release (or Enter again, or a pause in speech)
sends it, and the answer plays as it is made. The key while the answer plays is barge-in:
playback stops, the rest of the answer is cancelled, and the new turn is recorded at once.

The key source, the microphone and the speaker are objects handed in (voice/keys.py,
voice/devices.py), so the same loop runs on a desk and in tests.
"""
from __future__ import annotations

import asyncio
import sys
from typing import Callable, TextIO

from engine import Token
from engine.flows.voice_note import Transcript
from voice.devices import Recorder
from voice.keys import PRESS, QUIT, RELEASE, KeySource
from voice.loop import TurnResult, VoiceLoop


class _NextKey:
    """One outstanding read of the key source, kept across waits so no event is dropped."""

    def __init__(self, keys: KeySource):
        self.keys = keys
        self._task: asyncio.Future | None = None

    def future(self) -> asyncio.Future:
        if self._task is None:
            self._task = asyncio.ensure_future(self.keys.next())
        return self._task

    def ready(self) -> bool:
        return self._task is not None and self._task.done()

    def take(self) -> str:
        task, self._task = self.future(), None
        return task.result()

    def cancel(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task = None


async def _record(mic: Recorder, keys: KeySource, key: _NextKey) -> str:
    """Until the turn ends; says why: key, silence, limit or quit."""
    ended = mic.ended()
    stop = RELEASE if keys.hold else PRESS
    while True:
        await asyncio.wait({ended, key.future()}, return_when=asyncio.FIRST_COMPLETED)
        if ended.done():
            return "limit" if mic.at_limit else "silence"
        event = key.take()
        if event == QUIT:
            return "quit"
        if event == stop:
            return "key"


async def push_to_talk(loop: VoiceLoop, mic: Recorder, keys: KeySource, out: TextIO = sys.stdout,
                       on_turn: Callable[[TurnResult], None] | None = None) -> list[TurnResult]:
    """Turns until the key source says QUIT; returns each turn's result."""
    def say(text: str, end: str = "\n") -> None:
        out.write(text + end)
        out.flush()

    def on_event(ev) -> None:
        if isinstance(ev, Transcript):
            say(f"you: {ev.text}\nconfab: ", end="")
        elif isinstance(ev, Token):
            say(ev.text, end="")

    if keys.hold:
        idle = f"Hold {keys.label} to talk and let go to send; Ctrl-D quits."
        listening = f"listening… (let go of {keys.label} to send)"
    else:
        idle = "[Enter] to talk, Ctrl-D to quit"
        listening = "listening… [Enter] to send"
    loop.on_event = on_event
    key = _NextKey(keys)
    results: list[TurnResult] = []
    turn: asyncio.Future | None = None
    recording = False          # barge-in starts the next turn's recording straight away
    try:
        while True:
            if not recording:
                say(idle)
                event = RELEASE              # a release left over from the last turn
                while event == RELEASE:
                    await key.future()
                    event = key.take()
                if event == QUIT:
                    break
                mic.start()
            recording = False
            say(listening)
            ended_by = await _record(mic, keys, key)
            pcm = mic.stop()
            if ended_by == "quit":
                break
            if not mic.heard_speech:
                say("(no speech heard; nothing sent)")
                continue
            if ended_by == "silence":
                say("(you paused, so that is sent)")
            elif ended_by == "limit":
                say("(that is as long as a turn may be, so it is sent)")
            turn = asyncio.ensure_future(loop.turn(pcm))
            quitting = False
            while not turn.done():
                await asyncio.wait({turn, key.future()}, return_when=asyncio.FIRST_COMPLETED)
                if turn.done() or not key.ready():
                    continue
                event = key.take()
                if event == PRESS:                  # barge-in: stop, cancel, listen
                    await loop.barge_in()
                    mic.start()
                    recording = True
                    break
                if event == QUIT:
                    await loop.barge_in()
                    quitting = True
                    break
            result: TurnResult = await turn
            turn = None
            result.ended_by = ended_by
            results.append(result)
            say("")
            if result.error:
                say(result.error)
            elif result.interrupted:
                say("(interrupted)")
            elif result.note:
                say(f"({result.note})")
            if on_turn is not None:
                on_turn(result)
            if quitting:
                break
    finally:
        key.cancel()
        if mic.recording:
            mic.stop()
        if turn is not None and not turn.done():
            await loop.barge_in()
            turn.cancel()
    return results
