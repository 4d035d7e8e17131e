"""End of speech: an energy detector that says when someone has stopped talking (used by the
push-to-talk loop and the Realtime API, hence in the engine).

Frames of 30 ms are speech when their level stands clearly above the noise floor measured
so far. A turn ends after `silence_s` of non-speech that follows at least `min_speech_s` of
speech, or at `max_s` whatever happens.
"""
from __future__ import annotations

import math
from array import array
from dataclasses import dataclass


def frame_rms(frame: bytes) -> float:
    samples = array("h")
    samples.frombytes(frame[: len(frame) - len(frame) % 2])
    if not samples:
        return 0.0
    return math.sqrt(sum(s * s for s in samples) / len(samples))


@dataclass
class Endpointer:
    rate: int = 16_000
    frame_s: float = 0.03
    silence_s: float = 0.8
    min_speech_s: float = 0.2
    max_s: float = 60.0
    ratio: float = 3.0          # speech is this many times above the noise floor
    min_level: float = 150.0    # ... and at least this loud (16-bit scale)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._rest = b""
        self.noise = None
        self.speech_s = 0.0
        self.silence_run_s = 0.0
        self.total_s = 0.0
        self.ended = False

    def restart(self) -> None:
        """A new turn in the same stream: the noise floor measured so far stays."""
        noise = self.noise
        self.reset()
        self.noise = noise

    @property
    def heard_speech(self) -> bool:
        return self.speech_s >= self.min_speech_s

    def feed(self, pcm: bytes) -> bool:
        """Feed 16-bit mono samples; True once the turn has ended."""
        data = self._rest + pcm
        size = int(self.rate * self.frame_s) * 2
        n = len(data) // size
        self._rest = data[n * size:]
        for i in range(n):
            level = frame_rms(data[i * size:(i + 1) * size])
            self.total_s += self.frame_s
            floor = self.noise if self.noise is not None else level
            speech = level > max(self.min_level, floor * self.ratio)
            if speech:
                self.speech_s += self.frame_s
                self.silence_run_s = 0.0
            else:
                self.silence_run_s += self.frame_s
                # the noise floor follows the quiet frames only
                self.noise = level if self.noise is None else 0.95 * self.noise + 0.05 * level
            if (self.heard_speech and self.silence_run_s >= self.silence_s) or self.total_s >= self.max_s:
                self.ended = True
        return self.ended
