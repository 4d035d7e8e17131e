"""Support knowledge base: ingestion time, answer latency and the two rates on a held-out KB.

On tests/fixtures/kb/quillon (held out: the gate's thresholds were calibrated on Tidewell, Orrin,
Pantrio and Kelvo), with the offline models (MiniLM embeddings, SmolLM2 answers) and the desk's default path
(`answer_mode` generate, `drafting` extract: the chat model picks the cited passage's own
sentences; the passage is quoted when the draft is not supported by it):

- ingestion: `KnowledgeBase.add` of the 28 documents (chunks, headings and sentences embedded),
  the embedding model already loaded;
- latency per question: `SupportDeskAnswerer.answer`, from the question to the decision and the
  text to post, p50 and p95 (the chat model is loaded by a first question, not counted);
- cited-source accuracy (goal >= 0.90) and out-of-scope silence (goal >= 0.90), and how many
  posted answers were generated and how many of those were right (the expected source, holding
  the expected phrase), and the same for the quoted passages.

Run: `python -m tests.bench.bench_kb` (or `make bench BENCH=kb`).
"""
from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

KB = Path(__file__).parent.parent / "fixtures" / "kb" / "quillon"


async def _run_all(verbose: bool = False) -> list[tuple[str, float, str]]:
    from bots.kb_cli import holds, percentile, read_questions, verdict
    from engine import Engine, Origin
    from engine.kb import Policy, SupportDeskAnswerer, open_kb
    from engine.work.embeddings import embed
    from tests.conftest import make_settings

    items = read_questions(str(KB / "questions.jsonl"))
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(make_settings(Path(tmp) / "data", Path(tmp) / "models"))
        await engine.start()
        kb = open_kb(engine)
        try:
            await embed(engine, ["warm up"])
            started = time.perf_counter()
            report = await kb.add([KB / "docs"])
            ingest = time.perf_counter() - started
            desk = SupportDeskAnswerer(engine, kb)
            policy = Policy.from_settings(engine.settings)
            origin = Origin(platform="bench")
            await desk.answer("how do i change my adress", policy, origin, log=False)
            seconds, outcomes = [], []
            for item in items:
                started = time.perf_counter()
                outcome = await desk.answer(item["question"], policy, origin, log=False)
                seconds.append(time.perf_counter() - started)
                outcomes.append(outcome)
                if verbose:
                    print(f"{seconds[-1]:6.2f} s {verdict(item, outcome):<12} {item['question'][:60]}")
        finally:
            kb.close()
            await engine.close()
    answerable = [(i, o) for i, o in zip(items, outcomes) if i["source"]]
    unanswerable = [(i, o) for i, o in zip(items, outcomes) if not i["source"]]
    accuracy = sum(verdict(i, o) == "right" for i, o in answerable) / len(answerable)
    silence = sum(verdict(i, o) == "quiet" for i, o in unanswerable) / len(unanswerable)
    generated = [(i, o) for i, o in zip(items, outcomes) if o.decision == "answer" and o.generated]
    generated_right = sum(verdict(i, o) == "right" and holds(o.answer, i.get("expect")) for i, o in generated)
    quoted = [(i, o) for i, o in zip(items, outcomes) if o.decision == "answer" and not o.generated]
    quoted_right = sum(verdict(i, o) == "right" and holds(o.answer, i.get("expect")) for i, o in quoted)
    posted = sum(o.decision == "answer" for o in outcomes)
    return [
        ("ingestion", ingest, f"s for {len(report.added)} documents, {report.chunks_embedded} chunks"),
        ("answer latency p50", percentile(seconds, 50), "s per question (generate mode)"),
        ("answer latency p95", percentile(seconds, 95), "s per question"),
        ("cited-source accuracy", accuracy, f"of {len(answerable)} answerable questions (goal >= 0.90)"),
        ("out-of-scope silence", silence, f"of {len(unanswerable)} unanswerable questions (goal >= 0.90)"),
        ("generated answers posted", float(len(generated)),
         f"of {posted} answers posted; {generated_right} right (source and expected phrase)"),
        ("quoted passages posted", float(len(quoted)), f"of {posted}; {quoted_right} right"),
    ]


def run() -> list[tuple[str, float, str]]:
    return asyncio.run(_run_all())


if __name__ == "__main__":
    import logging
    logging.basicConfig(level=logging.WARNING)
    for name, value, note in asyncio.run(_run_all(verbose=True)):
        print(f"{name}: {value:.3f} {note}")
