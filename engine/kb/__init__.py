"""The support knowledge base: documents in, cited answers out.

    open_kb(engine)        the knowledge base in DATA_DIR/kb.db, embedding through the engine
    KnowledgeBase          add / remove / documents / search / stats / feedback
    SupportDeskAnswerer    answer(question, policy, origin) -> Outcome (answer | silent | handover)
    is_question(text)      whether a support-channel message asks something
"""
from __future__ import annotations

from ..jobs import Origin
from .index import Hit, IngestReport, KnowledgeBase
from .support import Citation, Outcome, Policy, SupportDeskAnswerer, is_question

__all__ = ["open_kb", "KnowledgeBase", "Hit", "IngestReport", "SupportDeskAnswerer", "Policy",
           "Outcome", "Citation", "is_question"]

INGEST_ORIGIN = Origin(platform="kb", user="ingest", background=True)


def open_kb(engine) -> KnowledgeBase:
    """The engine's knowledge base. Ingestion embeds at class 2 (bulk work)."""
    from ..embeddings import embed
    settings = engine.settings
    model = engine.resolve_model(settings.default_embedding_model, "embedding").name

    async def embed_bulk(texts):
        return await embed(engine, texts, INGEST_ORIGIN, priority=2, model=model)

    return KnowledgeBase(settings.data_path / "kb.db", embed_bulk, model, settings.kb_chunk_chars,
                         settings.kb_max_file_bytes)
