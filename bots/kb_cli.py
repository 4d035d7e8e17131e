"""`confab kb add | list | remove | stats | ask | eval`: the knowledge base from the command line.

Each verb runs its own engine in this process (no resumed jobs), so it works whether or not
Confab is serving; the knowledge base file is shared with a running Confab.
"""
from __future__ import annotations

import asyncio
import getpass
import json
import sys
from pathlib import Path


async def _with_kb(args, work):
    from bots.cli import _settings
    from engine import ConfabError, Engine
    from engine.kb import open_kb
    from engine.messages import explain
    engine = Engine(_settings(args))
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


def _desk(engine, kb):
    from engine.kb import Policy, SupportDeskAnswerer
    return SupportDeskAnswerer(engine, kb), Policy.from_settings(engine.settings)


def _origin():
    from engine import Origin
    return Origin(platform="cli", user=getpass.getuser())


def cmd_ask(args) -> None:
    async def work(engine, kb):
        desk, policy = _desk(engine, kb)
        outcome = await desk.answer(args.question, policy, _origin(), log=False)
        if args.json:
            print(json.dumps(outcome.public()))
        else:
            print(f"[{outcome.decision}: retrieval {outcome.score:.2f}, grounding {outcome.grounding:.2f}, "
                  f"{outcome.reason}]")
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
            sys.exit(f"confab: {path} line {n}: expected {{\"question\": \"…\", \"source\": \"file\" | null}}")
        items.append(item)
    return items


def cmd_eval(args) -> None:
    items = read_questions(args.questions)

    async def work(engine, kb):
        desk, policy = _desk(engine, kb)
        cited = in_scope = quiet = out_scope = 0
        for item in items:
            outcome = await desk.answer(item["question"], policy, _origin(), log=False)
            source = item.get("source")
            if source:
                in_scope += 1
                ok = outcome.decision == "answer" and source in outcome.sources
                cited += ok
            else:
                out_scope += 1
                ok = outcome.decision != "answer"
                quiet += ok
            print(f"{'ok ' if ok else 'BAD'} {outcome.decision:<8} {outcome.score:.2f} "
                  f"{item['question'][:60]!r} -> {', '.join(outcome.sources) or '-'}"
                  f" (expected {source or 'no answer'})", flush=True)
        accuracy = cited / in_scope if in_scope else 1.0
        silence = quiet / out_scope if out_scope else 1.0
        print(f"cited-source accuracy {accuracy:.2f}, out-of-scope silence {silence:.2f}")
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
                   help='print {"decision", "answer", "sources"}')
    p.set_defaults(func=cmd_ask)
    p = common(ksub.add_parser("eval", help="cited-source accuracy and out-of-scope silence over "
                                             "a JSONL file of questions"))
    p.add_argument("questions", help='JSONL: {"question": "…", "source": "file name" | null}')
    p.set_defaults(func=cmd_eval)
