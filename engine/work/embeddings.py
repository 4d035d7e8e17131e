"""Embeddings as engine work: the `embed` job, its loader and executor, and a helper to await one.

The vectors travel as packed float32 bytes, not lists of floats: the store keeps each job's
result as JSON, and 64 vectors of 384 floats would add half a megabyte per row; bytes are
recorded there by their size only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from engine.config import Settings
from engine.errors import BackendMissing, BadRequest, LimitExceeded
from engine.jobs import Job, Origin, Usage, register_job_type
from engine.work.registry import RunContext, cpu_threads, register_executor, register_loader
from models.embeddings import EmbeddingsMissing, SentenceEmbedder
from models.registry import InstalledModel

MAX_TEXTS = 2048   # inputs in one job (OpenAI's limit for one request)


@register_job_type
@dataclass
class EmbedJob(Job):
    kind: ClassVar[str] = "embed"
    texts: list[str] = field(default_factory=list)
    normalize: bool = True


@dataclass
class EmbedResult:
    vectors: bytes     # float32 little-endian, row-major: count x dim
    count: int
    dim: int
    model: str
    usage: Usage

    def matrix(self):
        import numpy as np
        return np.frombuffer(self.vectors, dtype="<f4").reshape(self.count, self.dim)

    def as_lists(self) -> list[list[float]]:
        return self.matrix().tolist()


@register_loader("sentence-transformers", library="torch")
def load_sentence_transformers(model: InstalledModel, device: str, settings: Settings):
    try:
        return SentenceEmbedder(model.path, device, cpu_threads(settings))
    except EmbeddingsMissing:
        raise BackendMissing("sentence-transformers", "kb") from None


@register_executor("embed", "embedding")
def run_embed(embedder, job: EmbedJob, ctx: RunContext) -> EmbedResult:
    if not job.texts:
        raise BadRequest("There is nothing to embed.")
    if len(job.texts) > MAX_TEXTS:
        raise LimitExceeded("The number of inputs", len(job.texts), MAX_TEXTS)
    out = embedder.embed(list(job.texts), job.normalize, cancelled=ctx.cancelled)
    return EmbedResult(out.vectors, out.count, out.dim, job.model, Usage(out.tokens, 0))


async def embed(engine, texts: list[str], origin: Origin | None = None, priority: int | None = None,
                model: str = "", batch: int = 64):
    """Embed texts through the engine (in jobs of at most `batch`); an (n, dim) float32 array."""
    import numpy as np
    model = model or engine.settings.default_embedding_model
    parts = []
    for start in range(0, len(texts), batch):
        handle = await engine.submit(EmbedJob(model=model, origin=origin or Origin(), priority=priority,
                                              texts=list(texts[start:start + batch])))
        parts.append((await handle.result()).matrix())
    if not parts:
        return np.zeros((0, 0), dtype="<f4")
    return np.concatenate(parts)
