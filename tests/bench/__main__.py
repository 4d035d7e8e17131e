"""`python -m tests.bench [NAME ...]`: run every tests/bench/bench_*.py module's `run()` and print
one table. Each `run()` returns a list of (name, value, note) rows; a module that fails is
reported and the others still run."""
from __future__ import annotations

import importlib
import inspect
import sys
import time
import traceback
from pathlib import Path


def modules(only: list[str]) -> list[str]:
    here = Path(__file__).parent
    names = sorted(p.stem for p in here.glob("bench_*.py"))
    return [n for n in names if not only or n in only or n.removeprefix("bench_") in only]


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.1f}"
    return str(value)


def main(argv: list[str]) -> int:
    rows: list[tuple[str, str, str, str]] = []
    failed = 0
    for name in modules(argv):
        started = time.monotonic()
        print(f"running {name} ...", file=sys.stderr, flush=True)
        try:
            module = importlib.import_module(f"tests.bench.{name}")
            run = getattr(module, "run", None)
            if run is None or inspect.iscoroutinefunction(run) or any(
                    p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                    for p in inspect.signature(run).parameters.values()):
                rows.append((name.removeprefix("bench_"), "skipped", "-",
                             f"no run() -> rows; run it alone: python -m tests.bench.{name}"))
                continue
            for row_name, value, note in run():
                rows.append((name.removeprefix("bench_"), row_name, fmt(value), note))
                print(f"  {row_name}: {fmt(value)} {note}", file=sys.stderr, flush=True)
        except Exception as e:       # one broken bench does not hide the others' figures
            failed += 1
            traceback.print_exc()
            rows.append((name.removeprefix("bench_"), "FAILED", type(e).__name__, str(e)[:80]))
        print(f"{name} took {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    widths = [max(len(r[i]) for r in rows + [("bench", "measure", "value", "note")]) for i in range(4)]
    header = ("bench", "measure", "value", "note")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(f"{r[0].ljust(widths[0])}  {r[1].ljust(widths[1])}  {r[2].rjust(widths[2])}  {r[3]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
