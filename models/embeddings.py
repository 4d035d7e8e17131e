"""Sentence embeddings on sentence-transformers (all-MiniLM-L6-v2 and friends).

The library is imported when a model loads, never at import time; without it the loader says
what to install.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


class EmbeddingsMissing(ImportError):
    """sentence-transformers (and torch) are not installed."""


@dataclass
class Embedded:
    vectors: bytes          # float32, little-endian, row-major: count x dim
    count: int
    dim: int
    tokens: int


class SentenceEmbedder:
    """One loaded sentence-transformers model. Blocking; runs in a worker thread."""

    def __init__(self, path: str, device: str = "cpu", threads: int = 0):
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise EmbeddingsMissing(str(e)) from None
        if threads and device == "cpu":
            torch.set_num_threads(threads)
        self._torch = torch
        self.model = SentenceTransformer(path, device=device)
        get_dim = getattr(self.model, "get_embedding_dimension", None) or \
            self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self.max_tokens = int(self.model.max_seq_length or 256)

    def count_tokens(self, texts: list[str]) -> int:
        encoded = self.model.tokenizer(texts, truncation=True, max_length=self.max_tokens)
        return sum(len(ids) for ids in encoded["input_ids"])

    def embed(self, texts: list[str], normalize: bool = True, batch_size: int = 32,
              cancelled: Callable[[], bool] = lambda: False) -> Embedded:
        import numpy as np
        parts = []
        for start in range(0, len(texts), batch_size):
            if cancelled():
                break
            batch = texts[start:start + batch_size]
            with self._torch.inference_mode():
                parts.append(self.model.encode(batch, batch_size=batch_size, convert_to_numpy=True,
                                               normalize_embeddings=normalize,
                                               show_progress_bar=False))
        matrix = np.concatenate(parts).astype("<f4") if parts else np.zeros((0, self.dim), "<f4")
        return Embedded(matrix.tobytes(), int(matrix.shape[0]), self.dim, self.count_tokens(texts))

    def close(self) -> None:
        device = str(getattr(self.model, "device", "cpu"))
        self.model = None
        if device.startswith("cuda"):   # torch's caching allocator keeps freed blocks otherwise
            self._torch.cuda.empty_cache()
