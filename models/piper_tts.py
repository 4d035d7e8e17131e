"""Text-to-speech on Piper (ONNX voices): the fast voice, sentence by sentence."""
from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def _onnx(path: str | Path) -> Path:
    onnx = Path(path)
    if onnx.is_dir():
        onnx = sorted(p for p in onnx.iterdir() if p.suffix == ".onnx")[0]
    return onnx


@functools.lru_cache(maxsize=64)
def speakers_in(path: str) -> tuple[str, ...]:
    """The speakers a voice's config names (none for a one-speaker voice), without loading it."""
    try:
        config = json.loads(Path(str(_onnx(path)) + ".json").read_text(encoding="utf-8"))
    except (OSError, ValueError, IndexError):
        return ()
    return tuple(sorted(config.get("speaker_id_map") or {}))


def voice_name(path: str) -> str:
    """The voice's own name, its file's stem (en_US-joe-medium)."""
    return _onnx(path).stem


def _piper():
    try:
        import piper
    except ImportError as e:
        raise ImportError("piper-tts is not installed: pip install 'confab-bot[speech]'") from e
    return piper


class PiperTTS:
    """One Piper voice. `synthesize` returns 16-bit mono PCM bytes at `sample_rate`."""

    engine = "piper"

    def __init__(self, path: str, device: str = "cpu"):
        piper = _piper()
        onnx = _onnx(path)
        self.voice = piper.PiperVoice.load(str(onnx), config_path=str(onnx) + ".json",
                                           use_cuda=device.startswith("cuda"))
        self.sample_rate = int(self.voice.config.sample_rate)
        self.speakers = dict(getattr(self.voice.config, "speaker_id_map", None) or {})
        self.name = onnx.stem

    def voices(self) -> list[str]:
        return sorted(self.speakers) or [self.name]

    def synthesize(self, text: str, voice: str | None = None, speed: float = 1.0) -> bytes:
        """One sentence (or a few) to PCM. `speed` > 1 speaks faster."""
        piper = _piper()
        speaker = self.speakers.get(voice) if voice else None
        config = piper.SynthesisConfig(speaker_id=speaker,
                                       length_scale=(1.0 / speed) if speed and speed != 1.0 else None)
        return b"".join(chunk.audio_int16_bytes for chunk in self.voice.synthesize(text, config))

    def close(self) -> None:
        self.voice = None
