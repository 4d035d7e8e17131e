"""`confab kb add | list | remove | stats | ask | eval`: the knowledge base from the command line.

Each verb runs its own engine in this process (no resumed jobs), so it works whether or not
Confab is serving; the knowledge base file is shared with a running Confab.
"""
from __future__ import annotations

import asyncio
import getpass
import json
import sys
import time
from pathlib import Path

from engine import ConfabError, Engine, Origin
from engine.entry import settings_from
from engine.kb import Policy, SupportDeskAnswerer, open_kb
from engine.kb.calibrate import Observation, calibrate
from engine.messages import explain


async def _with_kb(args, work):
    engine = Engine(settings_from(args))
    await engine.start(resume=False)
    kb = None
    try:
        kb = open_kb(engine)
        return await work(engine, kb)
    except ConfabError as e:
        sys.exit(f"confab: {explain(e)}")
    finally:
        if kb is not None:
            kb.close()
        await engine.close()


def cmd_add(args) -> None:
    async def work(engine, kb):
        report = await kb.add(args.paths, force=args.force, prune=args.prune,
                              progress=lambda line: print(line, flush=True))
        print(f"{len(report.added)} added, {len(report.updated)} updated, {len(report.unchanged)} "
              f"unchanged, {len(report.failed)} failed" + (f", {len(report.removed)} removed" if report.removed
                                                          else "") +
              f"; {report.chunks_embedded} chunks embedded.")
        if report.failed:
            sys.exit(1)
    asyncio.run(_with_kb(args, work))


def cmd_list(args) -> None:
    async def work(engine, kb):
        docs = await kb.documents()
        if not docs:
            print("The knowledge base is empty. Add documents with `confab kb add PATH`.")
        for d in docs:
            link = f"  {d['link']}" if d["link"] else ""
            print(f"{d['id']:>5}  {d['name']:<32} {d['chunks']:>4} chunks  {d['title']}{link}")
    asyncio.run(_with_kb(args, work))


def cmd_remove(args) -> None:
    async def work(engine, kb):
        gone = []
        for what in args.documents:
            gone += await kb.remove(what)
        print(f"Removed {len(gone)} document(s): {', '.join(gone)}" if gone else "Nothing matched.")
        if not gone:
            sys.exit(1)
    asyncio.run(_with_kb(args, work))


def cmd_stats(args) -> None:
    async def work(engine, kb):
        s = await kb.stats()
        if args.json:
            print(json.dumps(s))
            return
        asked = s["answers"] + s["handovers"] + s["silent"]
        print(f"documents      {s['documents']}\nchunks         {s['chunks']}\n"
              f"embeddings     {s['model'] or '-'} ({s['dim']} dimensions)\n"
              f"questions      {asked}: {s['answers']} answered, {s['handovers']} handed over, "
              f"{s['silent']} left alone\n"
              f"feedback       {s['helpful']} helpful, {s['not_helpful']} not helpful")
    asyncio.run(_with_kb(args, work))


def _desk(engine, kb, **overrides):
    return SupportDeskAnswerer(engine, kb), Policy.from_settings(engine.settings, **overrides)


def _origin():
    return Origin(platform="cli", user=getpass.getuser())


def cmd_ask(args) -> None:
    async def work(engine, kb):
        desk, policy = _desk(engine, kb)
        outcome = await desk.answer(args.question, policy, _origin(), log=False)
        if args.json:
            print(json.dumps(outcome.public(), ensure_ascii=False))
        else:
            sig = outcome.signals
            print(f"[{outcome.decision}: {outcome.reason}; best passage {outcome.best or '-'}: relevance "
                  f"{sig.relevance:.2f}, coverage {sig.coverage:.2f}, margin {sig.margin:.2f}, similarity "
                  f"{sig.similarity:.2f}, keywords {sig.keyword:.2f}" + (f", support {sig.support:.2f}"
                                                                         if sig.support is not None else "") + "]")
            print(outcome.text or "(silence)")
    asyncio.run(_with_kb(args, work))


def read_questions(path: str) -> list[dict]:
    items = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            assert isinstance(item, dict) and isinstance(item.get("question"), str)
        except (ValueError, AssertionError):
            sys.exit(f"confab: {path} line {n}: expected {{\"question\": \"…\", \"source\": \"file\" | null,"
                     f" \"expect\": \"a phrase the answer holds\" (optional)}}")
        items.append(item)
    return items


def _squash(text: str) -> str:
    return " ".join(text.lower().split())


def holds(answer: str, expect: str | None) -> bool:
    """Whether an answer says what was expected (no phrase given: it is not checked)."""
    return not expect or _squash(expect) in _squash(answer)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def verdict(item: dict, outcome) -> str:
    """right | wrong source | held back (answerable); quiet | answered (unanswerable)."""
    if item.get("source"):
        if outcome.decision != "answer":
            return "held back"
        return "right" if item["source"] in outcome.sources else "wrong source"
    return "answered" if outcome.decision == "answer" else "quiet"


def report(items: list[dict], outcomes: list, seconds: list[float]) -> list[str]:
    """The evaluation's summary: rates, the confusion of decisions, generated answers, latency."""
    answerable = [(i, o) for i, o in zip(items, outcomes) if i.get("source")]
    unanswerable = [(i, o) for i, o in zip(items, outcomes) if not i.get("source")]
    right = sum(verdict(i, o) == "right" for i, o in answerable)
    quiet = sum(verdict(i, o) == "quiet" for i, o in unanswerable)
    accuracy = right / len(answerable) if answerable else 1.0
    silence = quiet / len(unanswerable) if unanswerable else 1.0

    def row(pairs):
        cells = {"right": 0, "wrong": 0, "handover": 0, "silent": 0}
        for i, o in pairs:
            if o.decision == "answer":
                cells["right" if not i.get("source") or i["source"] in o.sources else "wrong"] += 1
            else:
                cells[o.decision] += 1
        return cells
    a, u = row(answerable), row(unanswerable)
    posted = [(i, o) for i, o in zip(items, outcomes) if o.decision == "answer"]
    generated = [(i, o) for i, o in posted if o.generated]
    quoted = [(i, o) for i, o in posted if not o.generated]

    def fine(pairs):
        return sum(bool(i.get("source")) and i["source"] in o.sources and holds(o.answer, i.get("expect"))
                   for i, o in pairs)
    lines = [
        "",
        "decisions            answered (right source)  answered (other source)  handed over  silent",
        f"  answerable   {len(answerable):>4}  {a['right']:>23}  {a['wrong']:>23}  {a['handover']:>11}  {a['silent']:>6}",
        f"  unanswerable {len(unanswerable):>4}  {'-':>23}  {u['right']:>23}  {u['handover']:>11}  {u['silent']:>6}",
        f"answers posted {len(posted)}: {len(generated)} generated ({fine(generated)} right), "
        f"{len(quoted)} quoted passages ({fine(quoted)} right); right = the expected source, holding the "
        "expected phrase",
        f"latency per question: p50 {percentile(seconds, 50):.2f} s, p95 {percentile(seconds, 95):.2f} s",
        f"cited-source accuracy {accuracy:.2f}, out-of-scope silence {silence:.2f}",
    ]
    return lines


def cmd_eval(args) -> None:
    items = read_questions(args.questions)

    async def work(engine, kb):
        overrides = {"answer_mode": "excerpt"} if args.tune else {}
        desk, policy = _desk(engine, kb, **overrides)
        outcomes, seconds, misses = [], [], []
        for item in items:
            started = time.perf_counter()
            outcome = await desk.answer(item["question"], policy, _origin(), log=False)
            seconds.append(time.perf_counter() - started)
            outcomes.append(outcome)
            v = verdict(item, outcome)
            ok = v in ("right", "quiet")
            sig = outcome.signals
            line = (f"{'ok ' if ok else 'BAD'} {outcome.decision:<8} rel {sig.relevance:.2f} cov {sig.coverage:.2f} "
                    f"{item['question'][:60]!r} -> {', '.join(outcome.sources) or '-'}"
                    f" (expected {item.get('source') or 'no answer'})")
            print(line, flush=True)
            if not ok:
                misses.append(f"  {v}: {item['question']!r} -> {', '.join(outcome.sources) or outcome.decision}"
                              f" (expected {item.get('source') or 'no answer'}; best passage {outcome.best or '-'};"
                              f" {outcome.reason})")
        if misses:
            print(f"\nmisses ({len(misses)}):")
            print("\n".join(misses))
        policy_reranker = outcomes[0].signals.thresholds.get("reranker", "") if outcomes else ""
        obs = [Observation(i.get("source"), o.best, o.signals.relevance, o.signals.coverage, o.signals.margin,
                           policy_reranker) for i, o in zip(items, outcomes)]
        if args.observations:
            Path(args.observations).write_text("".join(json.dumps(o.__dict__) + "\n" for o in obs))
        if args.tune:
            for path in args.tune_with or ():
                obs += [Observation(**json.loads(line)) for line in Path(path).read_text().splitlines() if line]
            measured_with = sorted({o.reranker or "no reranker" for o in obs})
            if len(measured_with) > 1:
                sys.exit(f"confab: these observations were measured with different rerankers "
                         f"({', '.join(measured_with)}), whose relevance is not on one scale: calibrate "
                         "each on its own, or measure them all again with the same one.")
            score_name, now = (("CONFAB_KB_MIN_RERANK", policy.min_rerank) if policy_reranker
                               else ("CONFAB_KB_MIN_SCORE", policy.min_score))
            cal = calibrate(obs, args.target_silence)
            print(f"\ncalibrated on {len(obs)} questions (silence target {args.target_silence:.2f}"
                  f"{'' if cal.feasible else ', not reachable: the best silence instead'}):\n"
                  f"  {score_name}={cal.min_score:.2f}\n  CONFAB_KB_MIN_COVERAGE={cal.min_coverage:.2f}\n"
                  f"  CONFAB_KB_MIN_MARGIN={cal.min_margin:.2f}" + ("  (off: the margin did not help)"
                                                                  if cal.min_margin <= -1 else "") + "\n"
                  f"  with them: cited-source accuracy {cal.accuracy:.2f}, out-of-scope silence {cal.silence:.2f}"
                  f" (now {now:.2f} / {policy.min_coverage:.2f} / {policy.min_margin:.2f})")
        print("\n".join(report(items, outcomes, seconds)))
    asyncio.run(_with_kb(args, work))


def register_cli(sub, common) -> None:
    kb = sub.add_parser("kb", help="the support knowledge base: add, list, remove, stats, ask, eval")
    ksub = kb.add_subparsers(dest="kb_command", required=True)
    p = common(ksub.add_parser("add", help="ingest files or folders (Markdown, text, HTML, PDF, "
                                            "Q/A CSV or JSON); unchanged documents are skipped"))
    p.add_argument("paths", nargs="+")
    p.add_argument("--force", action="store_true", help="re-embed even unchanged documents")
    p.add_argument("--prune", action="store_true",
                   help="remove documents ingested from these folders whose files are gone")
    p.set_defaults(func=cmd_add)
    common(ksub.add_parser("list", help="the documents in the knowledge base")).set_defaults(func=cmd_list)
    p = common(ksub.add_parser("remove", help="remove documents by id, file name or path"))
    p.add_argument("documents", nargs="+")
    p.set_defaults(func=cmd_remove)
    p = common(ksub.add_parser("stats", help="documents, chunks, answers and feedback"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_stats)
    p = common(ksub.add_parser("ask", help="one question through the support-channel path"))
    p.add_argument("question")
    p.add_argument("--json", action="store_true",
                   help='print {"decision", "answer", "sources", "generated", "reason", "best_passage", '
                        '"draft", "signals"}: the measured signals behind the decision and the thresholds')
    p.set_defaults(func=cmd_ask)
    p = common(ksub.add_parser("eval", help="cited-source accuracy and out-of-scope silence over "
                                             "a JSONL file of questions; --tune finds the thresholds"))
    p.add_argument("questions", help='JSONL: {"question": "…", "source": "file name" | null, '
                                     '"expect": "a phrase the right answer holds" (optional)}')
    p.add_argument("--tune", action="store_true",
                   help="calibrate CONFAB_KB_MIN_SCORE, CONFAB_KB_MIN_COVERAGE and CONFAB_KB_MIN_MARGIN on these questions "
                        "(passages are quoted meanwhile: the chat model is not needed)")
    p.add_argument("--target-silence", type=float, default=0.9,
                   help="with --tune: the share of unanswerable questions to leave alone (default 0.9)")
    p.add_argument("--observations", metavar="FILE",
                   help="write each question's measured signals (JSONL), for --tune-with")
    p.add_argument("--tune-with", metavar="FILE", action="append",
                   help="with --tune: calibrate on these questions too (--observations of other knowledge bases)")
    p.set_defaults(func=cmd_eval)
