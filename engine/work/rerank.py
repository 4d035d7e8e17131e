"""Reranking as engine work: the `rerank` job (a cross-encoder scores passages against a query),
its loader and executor, and a helper to await one. The support desk uses it, when a reranker
is installed, to order and gate its candidate passages (engine/kb/rank.py)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from engine.config import Settings
from engine.errors import BackendMissing, BadRequest, LimitExceeded
from engine.jobs import Job, Origin, Usage, register_job_type
from engine.work.registry import RunContext, cpu_threads, register_executor, register_loader
from models.registry import InstalledModel
from models.rerankers import CrossEncoderReranker, RerankerMissing

MAX_PASSAGES = 256   # passages scored in one job


@register_job_type
@dataclass
class RerankJob(Job):
    kind: ClassVar[str] = "rerank"
    query: str = ""
    passages: list[str] = field(default_factory=list)


@dataclass
class RerankResult:
    scores: list[float]       # one per passage, in order, 0..1
    model: str
    usage: Usage


@register_loader("cross-encoder", library="torch")
def load_cross_encoder(model: InstalledModel, device: str, settings: Settings):
    try:
        return CrossEncoderReranker(model.path, device, cpu_threads(settings))
    except RerankerMissing:
        raise BackendMissing("sentence-transformers", "kb") from None


@register_executor("rerank", "reranker")
def run_rerank(reranker, job: RerankJob, ctx: RunContext) -> RerankResult:
    if not job.query.strip() or not job.passages:
        raise BadRequest("Reranking needs a query and at least one passage.")
    if len(job.passages) > MAX_PASSAGES:
        raise LimitExceeded("The number of passages", len(job.passages), MAX_PASSAGES)
    scores = reranker.score(job.query, list(job.passages), cancelled=ctx.cancelled)
    return RerankResult(scores, job.model, Usage(reranker.count_tokens(job.query, list(job.passages)), 0))


async def score_passages(engine, query: str, passages: list[str], origin: Origin | None = None, model: str = "",
                         priority: int | None = None) -> list[float]:
    """Score passages against a query through the engine: one relevance (0..1) per passage."""
    handle = await engine.submit(RerankJob(model=model, origin=origin or Origin(), priority=priority,
                                           query=query, passages=list(passages)))
    return list((await handle.result()).scores)
