"""The microphone and the speaker: a `Recorder` that any audio source feeds, and the sound
card's microphone and speaker through sounddevice (the optional extra `voice`)."""
from __future__ import annotations

import asyncio
import queue
import threading

from engine.errors import BackendMissing
from engine.media.audio import Pcm
from engine.media.vad import Endpointer


def _sounddevice():
    try:
        import sounddevice
    except (ImportError, OSError) as e:   # OSError: the PortAudio library is missing
        raise BackendMissing(f"sounddevice (with PortAudio: {e})", "voice") from None
    return sounddevice


class Recorder:
    """One turn's 16 kHz mono audio, fed from any thread by whatever hears it, and a future
    that the endpointer completes once the speaker has stopped (or the turn is too long).
    Subclasses open and close their device in `_open` / `_close`."""

    def __init__(self, rate: int = 16_000, endpointer: Endpointer | None = None):
        self.rate = rate
        self.endpointer = endpointer or Endpointer(rate=rate)
        self.recording = False
        self._frames: list[bytes] = []
        self._lock = threading.Lock()      # guards _frames, the endpointer and _ended
        self._ended: asyncio.Future | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Begin a turn (on the event loop): a fresh buffer and endpointer, then the device."""
        self._loop = asyncio.get_running_loop()
        with self._lock:
            self._frames = []
            self.endpointer.reset()
            self._ended = self._loop.create_future()
            self.recording = True
        self._open()

    def feed(self, data: bytes) -> None:
        """16-bit mono samples as the device delivers them; any thread."""
        with self._lock:
            if not self.recording:
                return
            self._frames.append(bytes(data))
            ended = self.endpointer.feed(data)
            fut = self._ended
        if ended and fut is not None:
            try:
                self._loop.call_soon_threadsafe(_settle, fut)
            except RuntimeError:      # the event loop is already closed
                pass

    def ended(self) -> asyncio.Future:
        """Done once the endpointer has heard speech then silence, or the turn hit its limit."""
        assert self._ended is not None, "start() first"
        return self._ended

    @property
    def heard_speech(self) -> bool:
        return self.endpointer.heard_speech

    @property
    def at_limit(self) -> bool:
        return self.endpointer.total_s >= self.endpointer.max_s

    def stop(self) -> Pcm:
        """End the turn; returns what was recorded."""
        if self.recording:
            self._close()
        with self._lock:
            self.recording = False
            data = b"".join(self._frames)
        return Pcm(data, self.rate)

    def _open(self) -> None:
        """Start delivering audio to `feed`."""

    def _close(self) -> None:
        """Stop delivering audio."""


def _settle(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


class Microphone(Recorder):
    """The default input device through sounddevice, in 30 ms blocks."""

    def __init__(self, rate: int = 16_000, endpointer: Endpointer | None = None):
        super().__init__(rate, endpointer)
        self.sd = _sounddevice()
        self._stream = None

    def _open(self) -> None:
        def callback(indata, frames, time_info, status):
            self.feed(bytes(indata))

        self._stream = self.sd.RawInputStream(samplerate=self.rate, channels=1, dtype="int16",
                                              blocksize=int(self.rate * 0.03), callback=callback)
        self._stream.start()

    def _close(self) -> None:
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
            self._stream = None


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
