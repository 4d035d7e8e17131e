"""A cross-encoder reranker in the support desk: the `rerank` job on the engine's model thread,
the desk ordering and gating on its score, `kb eval --tune` calibrating its threshold. No
reranker ships offline: a random-weight cross-encoder of the real architecture stands in (the
plumbing is tested, not the ranking's quality)."""
from __future__ import annotations

import asyncio
import json
import textwrap

import pytest

from bots.cli import main
from engine import BadRequest, UnknownModel
from engine.errors import LimitExceeded
from engine.kb import Policy, SupportDeskAnswerer, open_kb
from engine.kb.index import Candidate, Hit
from engine.kb.rank import by_reranker, rerank, signals_of
from engine.work.rerank import MAX_PASSAGES, score_passages
from models.registry import detect_kind
from tests.engine.test_kb import needs_kb
from tests.models.tiny_cross_encoder import tiny_cross_encoder

DOCS = {
    "billing.md": """\
        # Billing

        ## Refunds
        Refunds are issued within 14 days of purchase. Open Settings, choose Billing, then press
        "Request refund".

        ## Invoices
        Invoices are emailed on the first day of each month and kept under Settings > Billing.
        """,
    "setup.md": """\
        # Setting up the hub

        ## Wi-Fi
        The hub joins 2.4 GHz networks only. Hold the pairing button for five seconds until the
        ring turns blue.
        """,
}


def _candidate(cid: int, name: str, cosine: float) -> Candidate:
    return Candidate(Hit(cid, cosine, f"text {cid}", f"section {cid}", "", name, name), cosine, cosine, 0.0,
                     {"vector": cid}, 0.0)


def test_the_reranker_orders_documents_and_passages_by_its_scores():
    ranked = rerank([], [_candidate(1, "a.md", 0.9), _candidate(2, "b.md", 0.5), _candidate(3, "a.md", 0.4)])
    assert [s.hit.chunk_id for s in ranked] == [1, 3, 2]            # embeddings: a.md first
    reordered = by_reranker(ranked, [0.2, 0.1, 0.7])                 # the cross-encoder prefers b.md
    assert [(s.hit.chunk_id, s.reranker) for s in reordered] == [(2, 0.7), (1, 0.2), (3, 0.1)]
    signals = signals_of(reordered)
    assert signals.reranker == signals.relevance == 0.7 and signals.margin == pytest.approx(0.5)


def test_a_cross_encoder_folder_is_recognised_as_a_reranker():
    assert detect_kind(tiny_cross_encoder()) == ("reranker", "cross-encoder")


@needs_kb
async def test_rerank_jobs_score_like_the_library_and_refuse_bad_input(engine):
    import numpy as np
    from sentence_transformers import CrossEncoder

    engine.registry.add(tiny_cross_encoder(), name="tiny-reranker")
    passages = ["Refunds are issued within 14 days.", "The hub joins 2.4 GHz networks only."]
    scores = await asyncio.wait_for(score_passages(engine, "how do i get a refund", passages,
                                                   model="tiny-reranker"), 60)
    raw = CrossEncoder(str(tiny_cross_encoder()), device="cpu").predict(
        [("how do i get a refund", p) for p in passages])               # the library's own sigmoid
    assert np.allclose(scores, raw, atol=1e-5) and all(0 < s < 1 for s in scores)
    with pytest.raises(BadRequest, match="needs a query and at least one passage"):
        await score_passages(engine, "refund", [], model="tiny-reranker")
    with pytest.raises(LimitExceeded):
        await score_passages(engine, "refund", ["x"] * (MAX_PASSAGES + 1), model="tiny-reranker")
    with pytest.raises(UnknownModel, match="reranker model 'no-such-reranker' is not installed"):
        await score_passages(engine, "refund", ["x"], model="no-such-reranker")


@needs_kb
async def test_the_desk_gates_on_the_rerankers_score_when_one_is_installed(engine, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(textwrap.dedent(text))
    kb = open_kb(engine)
    try:
        await asyncio.wait_for(kb.add([docs]), 120)
        desk = SupportDeskAnswerer(engine, kb)
        question = "how do i get a refund"
        plain = await desk.answer(question, Policy.from_settings(engine.settings, answer_mode="excerpt"), log=False)
        assert plain.signals.reranker is None and plain.signals.thresholds["reranker"] == ""

        engine.registry.add(tiny_cross_encoder(), name="tiny-reranker")
        engine.refresh_models()
        lenient = Policy.from_settings(engine.settings, answer_mode="excerpt", min_rerank=0.0, min_coverage=0.0)
        out = await asyncio.wait_for(desk.answer(question, lenient, log=False), 60)
        assert out.signals.thresholds["reranker"] == "tiny-reranker"
        assert out.decision == "answer" and out.signals.relevance == out.signals.reranker
        strict = Policy.from_settings(engine.settings, answer_mode="excerpt", min_rerank=1.0, min_coverage=0.0)
        held = await desk.answer(question, strict, log=False)
        assert held.decision == "handover" and "< 1.00" in held.reason and "weak retrieval" in held.reason
        off = await desk.answer(question, Policy.from_settings(engine.settings, answer_mode="excerpt",
                                                               reranker="off"), log=False)
        assert off.signals.reranker is None and off.signals.relevance == plain.signals.relevance
        with pytest.raises(UnknownModel, match="reranker model 'nope'"):
            await desk.answer(question, Policy.from_settings(engine.settings, reranker="nope"), log=False)
    finally:
        kb.close()


@needs_kb
def test_kb_eval_tunes_the_rerankers_threshold_and_keeps_scales_apart(tmp_path, cli_env, capsys):
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(textwrap.dedent(text))
    questions = tmp_path / "q.jsonl"
    questions.write_text("\n".join(json.dumps(q) for q in (
        {"question": "how do i get a refund", "source": "billing.md"},
        {"question": "where are my invoices", "source": "billing.md"},
        {"question": "does the hub work on 5 ghz wifi", "source": "setup.md"},
        {"question": "do you sell gift cards", "source": None})) + "\n")
    main(["kb", "add", str(docs)])
    main(["kb", "eval", str(questions), "--tune", "--observations", str(tmp_path / "plain.jsonl")])
    out = capsys.readouterr().out
    assert "CONFAB_KB_MIN_SCORE=" in out and "CONFAB_KB_MIN_RERANK=" not in out
    main(["models", "add", str(tiny_cross_encoder()), "--name", "tiny-reranker"])
    main(["kb", "eval", str(questions), "--tune"])
    out = capsys.readouterr().out
    assert "CONFAB_KB_MIN_RERANK=" in out and "CONFAB_KB_MIN_SCORE=" not in out
    with pytest.raises(SystemExit, match="different rerankers"):
        main(["kb", "eval", str(questions), "--tune", "--tune-with", str(tmp_path / "plain.jsonl")])
