"""The microphone and the speaker, through sounddevice (the optional extra `voice`)."""
from __future__ import annotations

import queue
import threading

from engine.audio import Pcm
from engine.errors import BackendMissing

from .vad import Endpointer


def _sounddevice():
    try:
        import sounddevice
    except (ImportError, OSError) as e:   # OSError: the PortAudio library is missing
        raise BackendMissing(f"sounddevice (with PortAudio: {e})", "voice") from None
    return sounddevice


class Microphone:
    """Records 16 kHz mono until `stop()`, or until the endpointer hears the speaker stop."""

    def __init__(self, rate: int = 16_000, endpointer: Endpointer | None = None):
        self.sd = _sounddevice()
        self.rate = rate
        self.endpointer = endpointer or Endpointer(rate=rate)
        self._frames: list[bytes] = []
        self._stream = None
        self.ended = threading.Event()

    def start(self) -> None:
        self._frames = []
        self.endpointer.reset()
        self.ended.clear()

        def callback(indata, frames, time_info, status):
            data = bytes(indata)
            self._frames.append(data)
            if self.endpointer.feed(data):
                self.ended.set()

        self._stream = self.sd.RawInputStream(samplerate=self.rate, channels=1, dtype="int16",
                                              blocksize=int(self.rate * 0.03), callback=callback)
        self._stream.start()

    def stop(self) -> Pcm:
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
            self._stream = None
        return Pcm(b"".join(self._frames), self.rate)


class SpeakerPlayer:
    """Plays queued audio on the default output device in a thread; `stop()` cuts it off."""

    def __init__(self, block_s: float = 0.05):
        self.sd = _sounddevice()
        self.block_s = block_s
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._run, name="confab-speaker", daemon=True)
        self._thread.start()

    def play(self, pcm: Pcm) -> None:
        if not self._stop.is_set():
            self._idle.clear()
            self._queue.put(pcm)

    def _run(self) -> None:
        while True:
            pcm = self._queue.get()
            if pcm is None:
                return
            if not self._stop.is_set():
                step = int(pcm.rate * self.block_s) * 2
                with self.sd.RawOutputStream(samplerate=pcm.rate, channels=1, dtype="int16") as out:
                    for i in range(0, len(pcm.data), step):
                        if self._stop.is_set():
                            break
                        out.write(pcm.data[i:i + step])
            if self._queue.empty():
                self._idle.set()

    async def drain(self) -> None:
        import asyncio
        while not self._idle.is_set() and not self._stop.is_set():
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        while not self._queue.empty():
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._idle.set()

    def reset(self) -> None:
        self._stop.clear()

    def close(self) -> None:
        self.stop()
        self._queue.put(None)
