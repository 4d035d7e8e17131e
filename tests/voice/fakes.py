"""Stand-ins for the desk: a microphone that hears recorded speech, a speaker that keeps what it
is given, and a key that the test presses. The loop under test is the real one."""
from __future__ import annotations

import asyncio
import threading

from engine.media.audio import Pcm
from engine.media.vad import Endpointer
from voice.devices import Recorder
from voice.keys import PRESS, QUIT, RELEASE
from voice.loop import FilePlayer

BLOCK = 960          # 30 ms of 16 kHz 16-bit mono, as the real microphone delivers it


class ClipMicrophone(Recorder):
    """Each turn hears the next clip, then `quiet_s` of silence, in 30 ms blocks fed from its own
    thread as fast as it can (a real microphone would pace them; nothing here depends on it).
    `heard[i]` is set once turn i's audio has all been delivered."""

    def __init__(self, clips: list[tuple[Pcm, float]], endpointer: Endpointer | None = None):
        super().__init__(16_000, endpointer or Endpointer())
        self.clips = list(clips)
        self.heard = [threading.Event() for _ in clips]
        self.turns = 0
        self._thread: threading.Thread | None = None
        self._halt = threading.Event()

    def _open(self) -> None:
        pcm, quiet_s = self.clips[self.turns]
        assert pcm.rate == 16_000
        data = pcm.data + b"\x00\x00" * int(16_000 * quiet_s)
        done, self._halt = self.heard[self.turns], threading.Event()
        self.turns += 1
        halt = self._halt

        def play() -> None:
            for i in range(0, len(data), BLOCK):
                if halt.is_set():
                    break
                self.feed(data[i:i + BLOCK])
            done.set()

        self._thread = threading.Thread(target=play, name="fake-mic", daemon=True)
        self._thread.start()

    def _close(self) -> None:
        self._halt.set()
        if self._thread is not None:
            self._thread.join(5)

    async def all_heard(self, turn: int) -> None:
        await asyncio.wait_for(asyncio.to_thread(self.heard[turn].wait), 30)


class ScriptedKeys:
    """A hold-to-talk key (or, with hold=False, Enter) that the test presses."""

    def __init__(self, hold: bool = True):
        self.hold = hold
        self.label = "Right Ctrl" if hold else "Enter"
        self._queue: asyncio.Queue[str] = asyncio.Queue()

    def press(self) -> None:
        self._queue.put_nowait(PRESS)

    def release(self) -> None:
        self._queue.put_nowait(RELEASE)

    def quit(self) -> None:
        self._queue.put_nowait(QUIT)

    async def next(self) -> str:
        return await self._queue.get()

    def close(self) -> None:
        pass


class Speaker(FilePlayer):
    """Keeps what it plays (FilePlayer); `on_play` is called with each sentence's audio, and
    `stopped_at` records how many sentences had played when playback was stopped."""

    def __init__(self, on_play=None):
        super().__init__()
        self.on_play = on_play or (lambda n: None)
        self.played = 0
        self.stopped_at: list[int] = []

    def play(self, pcm: Pcm) -> None:
        if self.stopped:
            return
        super().play(pcm)
        self.played += 1
        self.on_play(self.played)

    def stop(self) -> None:
        self.stopped_at.append(self.played)
        super().stop()

    def reset(self) -> None:
        super().reset()
        self.played = 0
