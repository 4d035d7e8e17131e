"""Text-to-speech on Bark (transformers `BarkModel`): expressive, 13 languages, slow.

A model folder holds what `save_pretrained` writes for the model and its processor (tokenizer,
and `speaker_embeddings_path.json` with the voice presets when the folder has them).
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

# The Bark speaker library: v2/{lang}_speaker_{0..9} in these 13 languages.
LANGUAGES = ("en", "de", "es", "fr", "hi", "it", "ja", "ko", "pl", "pt", "ru", "tr", "zh")
PRESETS = tuple(f"v2/{lang}_speaker_{i}" for lang in LANGUAGES for i in range(10))


def _libs():
    try:
        import torch
        import transformers
    except ImportError as e:
        raise ImportError("Bark needs transformers and torch: pip install 'confab-bot[bark]'") from e
    return torch, transformers


class BarkTTS:
    engine = "bark"

    def __init__(self, path: str, device: str = "cpu", threads: int = 0):
        torch, transformers = _libs()
        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.device = "cuda" if device.startswith("cuda") else "cpu"
        dtype = torch.float16 if self.device == "cuda" else torch.float32
        folder = Path(path)
        self.model = transformers.BarkModel.from_pretrained(str(folder), dtype=dtype).to(self.device)
        self.model.eval()
        has_presets = (folder / "speaker_embeddings_path.json").exists()
        self.processor = transformers.BarkProcessor.from_pretrained(
            str(folder), speaker_embeddings_dict_path="speaker_embeddings_path.json" if has_presets else None)
        self.sample_rate = int(getattr(self.model.generation_config, "sample_rate", 24_000))
        self._lock = threading.Lock()   # one generation at a time on one model

    def voices(self) -> list[str]:
        presets = self.processor.speaker_embeddings or {}
        return sorted(k for k in presets if k != "repo_or_path")

    def synthesize(self, text: str, voice: str | None = None, speed: float = 1.0,
                   cancelled: Callable[[], bool] | None = None,
                   max_semantic_tokens: int | None = None) -> bytes:
        """One sentence to 16-bit PCM at `sample_rate`. `speed` is applied by the caller (ffmpeg)."""
        torch = self.torch
        preset = voice if voice and voice in self.voices() else None
        inputs = self.processor(text, voice_preset=preset, return_tensors="pt")
        inputs = {k: (v.to(self.device) if hasattr(v, "to") else
                      {kk: vv.to(self.device) for kk, vv in v.items()} if isinstance(v, dict) else v)
                  for k, v in inputs.items()}
        kwargs = {}
        if max_semantic_tokens:       # else the model's generation config decides (Bark: 768)
            kwargs["semantic_max_new_tokens"] = max_semantic_tokens
        if cancelled is not None:
            kwargs["semantic_stopping_criteria"] = _stop_when(cancelled)
        with self._lock, torch.inference_mode():
            audio = self.model.generate(**inputs, **kwargs)
        samples = audio.float().cpu().numpy().reshape(-1)
        peak = float(abs(samples).max()) if samples.size else 0.0
        if peak > 1.0:
            samples = samples / peak
        return (samples.clip(-1, 1) * 32767).astype("<i2").tobytes()

    def close(self) -> None:
        self.model = None
        if self.device == "cuda":
            self.torch.cuda.empty_cache()


def _stop_when(cancelled: Callable[[], bool]):
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _Cancelled(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return self._all(input_ids, cancelled())

        @staticmethod
        def _all(input_ids, flag):
            import torch
            return torch.full((input_ids.shape[0],), bool(flag), dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([_Cancelled()])
