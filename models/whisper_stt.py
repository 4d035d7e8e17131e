"""Speech-to-text on faster-whisper (CTranslate2 Whisper): transcribe and translate to English.

Takes 16 kHz mono float32 samples (the engine decodes uploads with ffmpeg first) and yields
segments one at a time, so the caller can stream them and stop between two.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Iterator

log = logging.getLogger(__name__)


def _faster_whisper():
    try:
        import faster_whisper
    except ImportError as e:
        raise ImportError("faster-whisper is not installed: pip install 'confab-bot[speech]'") from e
    return faster_whisper


@dataclass
class SttOptions:
    task: str = "transcribe"            # or translate (to English)
    language: str | None = None         # a hint; None detects it
    initial_prompt: str | None = None
    temperature: float = 0.0            # 0 falls back to higher temperatures on failure, as Whisper does
    beam_size: int = 5
    vad_filter: bool = True             # Silero VAD (shipped inside faster-whisper) skips silence
    word_timestamps: bool = False


@dataclass
class SttWord:
    start: float
    end: float
    word: str
    probability: float


@dataclass
class SttSegment:
    id: int
    start: float
    end: float
    text: str
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    compression_ratio: float = 0.0
    temperature: float = 0.0
    tokens: list[int] = field(default_factory=list)
    words: list[SttWord] = field(default_factory=list)
    seek: int = 0


@dataclass
class SttInfo:
    language: str
    language_probability: float
    duration: float


def language_codes() -> frozenset[str]:
    """The language codes Whisper knows."""
    _faster_whisper()
    from faster_whisper.tokenizer import _LANGUAGE_CODES
    return frozenset(_LANGUAGE_CODES)


CT2_CUDA_CACHE_CONFIG = f"4,3,12,{200 * 2**20}"


def compute_type_for(device: str) -> str:
    """int8 on the CPU, float16 on CUDA."""
    return "float16" if device.startswith("cuda") else "int8"


class WhisperSTT:
    def __init__(self, path: str, device: str = "cpu", threads: int = 0,
                 compute_type: str | None = None):
        self.device = "cuda" if device.startswith("cuda") else "cpu"
        if self.device == "cuda":
            # CTranslate2's caching allocator keeps freed GPU blocks for reuse, and keeps them
            # after the model is gone; its ceiling (bin_growth,min_bin,max_bin,max_cached_bytes)
            # is what the memory plan counts (engine/runtime/memory.py RUNTIME_COSTS).
            os.environ.setdefault("CT2_CUDA_CACHING_ALLOCATOR_CONFIG", CT2_CUDA_CACHE_CONFIG)
        fw = _faster_whisper()
        self.compute_type = compute_type or compute_type_for(self.device)
        self.beam_size: int | None = None   # the catalog's choice for this model, if any
        self.model = fw.WhisperModel(path, device=self.device, compute_type=self.compute_type,
                                     cpu_threads=threads, num_workers=1)

    @property
    def multilingual(self) -> bool:
        return bool(self.model.model.is_multilingual)

    def transcribe(self, samples, options: SttOptions) -> tuple[Iterator[SttSegment], SttInfo]:
        """Segments come lazily: decoding happens as the iterator is consumed."""
        temperature: float | tuple[float, ...] = options.temperature
        if options.temperature == 0.0:
            temperature = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
        segments, info = self.model.transcribe(
            samples, language=options.language or None, task=options.task,
            beam_size=options.beam_size, temperature=temperature,
            initial_prompt=options.initial_prompt or None, vad_filter=options.vad_filter,
            word_timestamps=options.word_timestamps)

        def convert() -> Iterator[SttSegment]:
            for s in segments:
                words = [SttWord(w.start, w.end, w.word, w.probability) for w in (s.words or [])]
                yield SttSegment(s.id, s.start, s.end, s.text, s.avg_logprob, s.no_speech_prob,
                                 s.compression_ratio, s.temperature or 0.0, list(s.tokens), words,
                                 int(s.seek))

        return convert(), SttInfo(info.language, info.language_probability, info.duration)

    def close(self) -> None:
        self.model = None
