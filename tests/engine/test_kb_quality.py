"""Support answers a team can trust: sections and FAQ entries as chunks, hybrid search, the gate's
signals and thresholds, and both goals on the held-out knowledge base, on the real models.

The knowledge bases are under tests/fixtures/kb: the thresholds were calibrated on Tidewell,
Orrin, Pantrio and Kelvo; Quillon is held out (written by a session that had not seen the desk's
code or results, evaluated once after that calibration, not changed since)."""
from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import pytest

from bots.cli import main
from bots.kb_cli import holds, percentile, read_questions, verdict
from engine.kb import Policy, SupportDeskAnswerer, open_kb
from engine.kb.calibrate import Observation, calibrate, rates
from engine.kb.index import KnowledgeBase, connect
from engine.kb.lexical import Vocabulary, coverage
from engine.kb.parse import chunk, parse_file
from engine.kb.support import extract_grammar, extracts, passage_sentences
from tests.engine.test_kb import needs_kb

FIXTURES = Path(__file__).parent.parent / "fixtures" / "kb"
HELD_OUT = FIXTURES / "quillon"
TUNING = FIXTURES / "tidewell"
ORRIN = FIXTURES / "orrin"


def parsed(path: Path):
    return parse_file(path, path.read_bytes())


def test_text_files_split_at_the_headings_they_show():
    doc = parsed(TUNING / "docs" / "firmware-updates.txt")        # headings in capitals
    assert doc.title == "Firmware updates"
    assert [s.title for s in doc.sections] == ["", "Checking the version", "Updating by hand",
                                               "What changed in 4.2"]
    doc = parsed(TUNING / "docs" / "sensors.txt")                 # underlined headings
    assert doc.title == "Root Probe soil moisture sensor"
    assert [s.title for s in doc.sections][1:] == ["Battery", "Range", "Moisture-based watering"]
    doc = parsed(ORRIN / "docs" / "account.txt")                  # short lines opening a paragraph
    assert [s.title for s in doc.sections] == ["Changing your email address", "Two-factor sign-in",
                                               "Deleting your account"]


def test_pdf_sections_follow_headings():
    pytest.importorskip("pypdf")
    doc = parsed(ORRIN / "docs" / "warranty.pdf")
    assert doc.title == "Orrin Warranty"
    assert [s.title for s in doc.sections] == ["Warranty periods", "Battery capacity", "Exclusions",
                                               "Making a claim"]
    assert "800 full" in doc.sections[1].text


def test_faq_entries_are_whole_chunks_and_semicolon_tables_read(tmp_path):
    doc = parsed(TUNING / "docs" / "shipping.csv")                # ';' with commas inside answers
    assert [s.title for s in doc.sections][0] == "Which countries do you ship to?"
    assert all(s.faq for s in doc.sections) and doc.sections[0].link.endswith("/shipping")
    long_answer = "Yes. " + "It is a long answer that goes on. " * 60
    path = tmp_path / "faq.json"
    path.write_text(json.dumps([{"question": "Is it long?", "answer": long_answer}]))
    pieces = chunk(parsed(path), 300)
    assert len(pieces) == 1 and pieces[0].faq and pieces[0].section == "Is it long?"
    md = tmp_path / "help.md"
    md.write_text("# Help\n\n## How do I reset it?\nHold the button.\n\n## Colours\nRed and blue.\n")
    assert [(c.section, c.faq) for c in chunk(parsed(md), 900)] == [("How do I reset it?", True),
                                                                  ("Colours", False)]


def test_typos_are_repaired_against_the_knowledge_base_but_real_words_are_not():
    vocab = Vocabulary(["The warranty covers the hub for two years.", "Password reset links expire.",
                        "Wi-Fi set-up of the hub."], common=frozenset({"wife", "yard"}))
    asked = {t.asked: t for t in vocab.question("how long is the warrenty, pasword, wife, wifi?")}
    assert asked["warrenty"].term == "warranty" and asked["warrenty"].known
    assert asked["pasword"].term == "password"
    assert asked["wifi"].known                                    # "Wi-Fi" in the text
    assert not asked["wife"].known                                # a real word: not a typo of wifi
    question = vocab.question("warranty for the enclosure")
    assert coverage(question, {"warranty"}) < 1.0
    assert coverage(question, {"warranty", "enclosur"}) == 1.0


def test_calibration_finds_thresholds_between_the_answerable_and_the_rest():
    obs = ([Observation(f"d{i}.md", f"d{i}.md", 0.6 + i / 100, 0.7) for i in range(20)]
           + [Observation(None, "d1.md", 0.45, 0.3 + i / 100) for i in range(10)]
           + [Observation("x.md", "y.md", 0.9, 0.9)])             # a wrong passage stays wrong
    cal = calibrate(obs, target_silence=0.9)
    assert cal.feasible and cal.silence == 1.0 and cal.accuracy == 20 / 21
    assert rates(obs, cal.min_score, cal.min_coverage) == (cal.accuracy, cal.silence)
    assert 0.45 < cal.min_score <= 0.6 or 0.39 < cal.min_coverage <= 0.7


def test_the_margin_is_calibrated_only_where_it_pays():
    """min_margin stays off (-1) when it does not improve on score and coverage (as on the
    tuning knowledge bases), and is set when only it tells the unanswerable questions apart."""
    alike = ([Observation(f"d{i}.md", f"d{i}.md", 0.7, 0.8, 0.05 + i / 100) for i in range(20)]
             + [Observation(None, "d1.md", 0.5, 0.8, 0.3) for _ in range(10)])
    assert calibrate(alike).min_margin == -1.0
    apart = ([Observation(f"d{i}.md", f"d{i}.md", 0.7, 0.8, 0.15 + i / 100) for i in range(20)]
             + [Observation(None, "d1.md", 0.7, 0.8, 0.01) for _ in range(10)])
    cal = calibrate(apart)
    assert cal.feasible and (cal.accuracy, cal.silence) == (1.0, 1.0) and 0.01 < cal.min_margin <= 0.15
    assert rates(apart, cal.min_score, cal.min_coverage, cal.min_margin) == (1.0, 1.0)
    assert calibrate(apart, margins=False).accuracy == 0.0     # silence only by never answering


def test_extract_drafts_are_the_passage_own_sentences():
    text = ('Refunds are issued within 14 days. To ask for one, open Settings,\nchoose Billing, then '
            'press "Request refund".\n\n- The money returns to the card.\n- It takes 5 days.')
    sentences = passage_sentences(text)
    assert sentences == ["Refunds are issued within 14 days.",            # lines of a paragraph joined
                         'To ask for one, open Settings, choose Billing, then press "Request refund".',
                         "The money returns to the card.", "It takes 5 days."]
    assert extracts(sentences, [1]) == [sentences[0] + " " + sentences[1], sentences[1],
                                        sentences[1] + " " + sentences[2]]
    assert len(extracts(sentences, [0, 3])) == 4                         # one, or two in a row
    grammar = extract_grammar(['Press "Request refund".', "A \\ B"])
    assert grammar == 'root ::= "Press \\"Request refund\\"." | "A \\\\ B"\n'


def test_eval_helpers():
    assert holds("Leave it  at\n40 to 60% charge", "40 to 60%") and not holds("no", "40 to 60%")
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5 and percentile([5.0], 95) == 5.0
    items = read_questions(str(HELD_OUT / "questions.jsonl"))
    assert len(items) == 60 and sum(1 for i in items if i["source"]) == 45
    files = {p.name for p in (HELD_OUT / "docs").iterdir()}
    assert {i["source"] for i in items if i["source"]} == files   # every document is asked about
    assert {p.suffix for p in (HELD_OUT / "docs").iterdir()} == {".md", ".txt", ".html", ".pdf",
                                                                   ".csv", ".json"}

    class O:
        decision, sources = "answer", ["a.md"]
    assert verdict({"source": "a.md"}, O) == "right" and verdict({"source": None}, O) == "answered"


@needs_kb
async def test_hybrid_search_finds_faq_questions_and_exact_codes(engine):
    kb = open_kb(engine)
    try:
        report = await asyncio.wait_for(kb.add([TUNING / "docs"]), 240)
        assert len(report.added) == 27 and not report.failed
        desk = SupportDeskAnswerer(engine, kb)
        policy = Policy.from_settings(engine.settings, answer_mode="excerpt")
        code = await asyncio.wait_for(desk.answer("getting E21 on the app", policy, log=False), 60)
        assert code.best == "error-codes.html" and "e21" not in code.signals.missing
        assert code.signals.ranks.get("keyword") == 1                  # BM25 found the code
        # (a question of three words is too short for the calibrated relevance: handed over)
        assert code.decision in ("answer", "handover")
        faq = await asyncio.wait_for(desk.answer("Where can I find my invoices?", policy, log=False), 60)
        assert faq.sources == ["billing-faq.csv"] and faq.signals.faq
        assert faq.signals.ranks.get("heading") == 1 and faq.signals.similarity > 0.9
        off = await asyncio.wait_for(desk.answer("do you have a student discount?", policy, log=False), 60)
        assert off.decision == "handover" and off.sources == [] and "student" in off.signals.missing
        assert "does not cover" in off.reason or "weak retrieval" in off.reason
        again = await asyncio.wait_for(kb.add([TUNING / "docs"]), 60)
        assert again.chunks_embedded == 0
    finally:
        kb.close()


@needs_kb
def test_held_out_rates_through_the_cli(cli_env, capsys):
    """`confab kb add` and `confab kb eval` on the held-out knowledge base, passages quoted (the
    gate decides; generation is measured by tests/bench/bench_kb.py): the rates measured when it
    was first evaluated hold (cited accuracy 0.40, far below the 0.90 goal; silence 0.93)."""
    cli_env.setenv("CONFAB_KB_ANSWER_MODE", "excerpt")
    main(["kb", "add", str(HELD_OUT / "docs")])
    assert "28 added, 0 updated, 0 unchanged, 0 failed" in capsys.readouterr().out
    main(["kb", "ask", "our front door is 85mm thick, which size should i order", "--json"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["decision"] == "answer" and out["sources"] == ["door-compatibility.html"]
    signals = out["signals"]
    assert {"relevance", "score", "coverage", "literal_coverage", "meant", "similarity", "sentence", "heading",
            "keyword", "margin", "reranker", "ranks", "thresholds"} <= set(signals)
    assert signals["relevance"] >= signals["thresholds"]["min_score"]
    main(["kb", "eval", str(HELD_OUT / "questions.jsonl")])
    lines = capsys.readouterr().out.strip().splitlines()
    last = lines[-1].replace(",", "").split()
    accuracy, silence = float(last[2]), float(last[5])
    assert accuracy >= 0.38 and silence >= 0.9, "\n".join(lines[-25:])
    assert any(line.startswith("decisions") for line in lines)
    assert any(line.startswith("latency per question") for line in lines)


@needs_kb
async def test_a_knowledge_base_from_before_hybrid_search_opens_and_reingests(tmp_path):
    """kb.db files written before sections, FAQ entries and keywords: the chunks table gains its
    column, keyword search is filled from the stored chunks at once, and the next `kb add`
    re-chunks every document (the chunker's version is part of the content hash)."""
    import numpy as np
    import sqlite_vec

    async def embed(texts):   # a stand-in for the embedding model: this test is about storage
        out = np.zeros((len(texts), 8), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i, int(hashlib.sha256(t.encode()).hexdigest(), 16) % 8] = 1.0
        return out

    path = tmp_path / "kb.db"
    db = connect(path)
    db.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE documents (id INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL, title TEXT NOT NULL, fmt TEXT NOT NULL, link TEXT NOT NULL,
            hash TEXT NOT NULL, chunks INTEGER NOT NULL, added REAL NOT NULL, updated REAL NOT NULL);
        CREATE TABLE chunks (id INTEGER PRIMARY KEY AUTOINCREMENT, doc_id INTEGER NOT NULL,
            ord INTEGER NOT NULL, section TEXT NOT NULL, text TEXT NOT NULL, link TEXT NOT NULL);
        CREATE TABLE outcomes (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL,
            platform TEXT NOT NULL, channel TEXT NOT NULL, thread TEXT NOT NULL, question TEXT NOT NULL,
            decision TEXT NOT NULL, score REAL NOT NULL, sources TEXT NOT NULL, feedback INTEGER);
        CREATE VIRTUAL TABLE chunk_vec USING vec0(embedding float[8] distance_metric=cosine);
        INSERT INTO meta VALUES ('dim', '8'), ('model', 'm');
    """)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "codes.md").write_text("# Codes\n\n## E42\nThe pump is dry.\n")
    db.execute("INSERT INTO documents VALUES (1, ?, 'codes.md', 'Codes', 'markdown', '', 'old', 1, 0, 0)",
               (str((docs / "codes.md").resolve()),))
    db.execute("INSERT INTO chunks VALUES (1, 1, 0, 'E42', 'The pump is dry.', '')")
    db.execute("INSERT INTO chunk_vec (rowid, embedding) VALUES (1, ?)",
               (sqlite_vec.serialize_float32([1.0] + [0.0] * 7),))
    db.commit()
    db.close()
    kb = KnowledgeBase(path, embed, "m")
    try:
        found, _ = await kb.candidates("what does E42 mean", np.eye(8, dtype=np.float32)[3])
        assert [c.hit.section for c in found] == ["E42"] and found[0].ranks.get("keyword") == 1
        report = await kb.add([docs])
        assert report.updated == ["codes.md"] and report.chunks_embedded == 1
        found, _ = await kb.candidates("what does E42 mean", np.eye(8, dtype=np.float32)[3])
        assert found[0].hit.section == "E42" and "heading" in found[0].ranks
    finally:
        kb.close()


def test_words_the_passage_means_count_in_coverage():
    from engine.kb.lexical import Term
    from engine.kb.rank import Signals, credit_meaning, without
    assert without("what Tire pressure, tire?", "tire").split() == ["what", "pressure,", "?"]
    asked = [Term("tire", 2.0, "tire", False), Term("pressur", 1.0, "pressure", True),
             Term("moon", 1.0, "moon", False)]
    signals = Signals(coverage=0.25, literal_coverage=0.25, missing=["tire", "moon"])
    credit_meaning(signals, asked, [asked[0], asked[2]], [0.25, -0.03])   # only "tire" brings it nearer
    assert signals.meant == {"tire": 0.25} and signals.coverage == 0.75 and signals.missing == ["moon"]
    assert signals.literal_coverage == 0.25


@needs_kb
async def test_a_customers_word_for_what_the_page_says_counts_as_covered(engine):
    """"tire" on a page about tyres: the word is not in the passage, but taking it out of the
    question makes the question less like the passage, so coverage counts it."""
    kb = open_kb(engine)
    try:
        await asyncio.wait_for(kb.add([ORRIN / "docs"]), 240)
        desk = SupportDeskAnswerer(engine, kb)
        policy = Policy.from_settings(engine.settings, answer_mode="excerpt")
        out = await asyncio.wait_for(desk.answer("what tire pressure should i run", policy, log=False), 60)
        assert out.best == "tyres-and-punctures.txt" and "tire" in out.signals.meant
        assert out.signals.coverage > out.signals.literal_coverage and "tire" not in out.signals.missing
        assert out.decision == "answer" and out.sources == ["tyres-and-punctures.txt"]
    finally:
        kb.close()
