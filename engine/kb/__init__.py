"""The support knowledge base: documents in, cited answers out.

    open_kb(engine)        the knowledge base in DATA_DIR/kb.db, embedding through the engine
    KnowledgeBase          add / remove / documents / search / stats / feedback
    SupportDeskAnswerer    answer(question, policy, origin) -> Outcome (answer | silent | handover),
                           with the Signals behind the decision
    is_question(text)      whether a support-channel message asks something
"""
from __future__ import annotations

from pathlib import Path

from engine.jobs import Origin
from engine.kb.index import Hit, IngestReport, KnowledgeBase
from engine.kb.rank import Signals
from engine.kb.support import Citation, Outcome, Policy, SupportDeskAnswerer, is_question
from engine.work.embeddings import embed

__all__ = ["open_kb", "KnowledgeBase", "Hit", "IngestReport", "SupportDeskAnswerer", "Policy",
           "Outcome", "Citation", "Signals", "is_question"]

INGEST_ORIGIN = Origin(platform="kb", user="ingest", background=True)


def open_kb(engine) -> KnowledgeBase:
    """The engine's knowledge base. Ingestion embeds at class 2 (bulk work)."""
    settings = engine.settings
    installed = engine.resolve_model(settings.default_embedding_model, "embedding")
    model = installed.name

    async def embed_bulk(texts):
        return await embed(engine, texts, INGEST_ORIGIN, priority=2, model=model)

    return KnowledgeBase(settings.data_path / "kb.db", embed_bulk, model, settings.kb_chunk_chars,
                         settings.kb_max_file_bytes, common_words(Path(installed.path)))


def common_words(model_folder: Path) -> frozenset[str]:
    """Whole words in the embedding model's WordPiece vocabulary (`vocab.txt`, as BERT-family
    models such as MiniLM ship it): real words, which typo repair leaves alone."""
    vocab = model_folder / "vocab.txt" if model_folder.is_dir() else None
    if vocab is None or not vocab.is_file():
        return frozenset()
    return frozenset(w for w in vocab.read_text(encoding="utf-8", errors="replace").split()
                     if w.isalpha() and w.islower() and len(w) > 1)
