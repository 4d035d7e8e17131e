"""Cross-encoder rerankers on sentence-transformers (ms-marco-MiniLM, bge-reranker and friends).

A cross-encoder reads the question and a passage together and scores how well the passage
answers it: what a bi-encoder's cosine (embeddings.py) cannot tell apart, "a page about the same
topic" and "the page that says what was asked". The library is imported when a model loads,
never at import time; without it the loader says what to install.
"""
from __future__ import annotations

from typing import Callable


class RerankerMissing(ImportError):
    """sentence-transformers (and torch) are not installed."""


class CrossEncoderReranker:
    """One loaded cross-encoder with a single relevance output. Blocking; runs in a worker thread."""

    def __init__(self, path: str, device: str = "cpu", threads: int = 0):
        try:
            import torch
            from sentence_transformers import CrossEncoder
        except ImportError as e:
            raise RerankerMissing(str(e)) from None
        if threads and device == "cpu":
            torch.set_num_threads(threads)
        self._torch = torch
        self.model = CrossEncoder(path, device=device)
        self.max_tokens = int(getattr(self.model, "max_seq_length", None) or 512)

    def count_tokens(self, query: str, passages: list[str]) -> int:
        encoded = self.model.tokenizer([query] * len(passages), passages, truncation=True,
                                       max_length=self.max_tokens)
        return sum(len(ids) for ids in encoded["input_ids"])

    def score(self, query: str, passages: list[str], batch_size: int = 16,
              cancelled: Callable[[], bool] = lambda: False) -> list[float]:
        """Each passage's relevance to the query, 0..1 (the model's logit through a sigmoid)."""
        import numpy as np
        out: list[float] = []
        for start in range(0, len(passages), batch_size):
            if cancelled():
                break
            batch = [(query, p) for p in passages[start:start + batch_size]]
            with self._torch.inference_mode():
                logits = self.model.predict(batch, batch_size=batch_size, show_progress_bar=False,
                                            activation_fn=self._torch.nn.Identity())
            out += [float(x) for x in 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64).reshape(-1)))]
        return out

    def close(self) -> None:
        device = str(getattr(self.model, "device", "cpu"))
        self.model = None
        if device.startswith("cuda"):
            self._torch.cuda.empty_cache()
