"""The scheduler on a synthetic mixed trace, on simulated time.

The real `Scheduler` (submit / take_next / finished) and the real `ModelManager` (fit, LRU
eviction, loads through its one lock) run a backend whose times are set: every load takes
LOAD_S, every job SERVICE_S (load ≥ 10× service). The memory budget holds two of the four
models. Three policies run the same trace:
  - FIFO: the aging bound at 0, so the oldest job always goes first (priority classes kept);
  - affinity without aging: an infinite aging bound;
  - Confab: affinity with the default 30 s aging bound.
A second trace floods class 1 and measures the wait of class-0 jobs arriving meanwhile.
"""
from __future__ import annotations

import asyncio
import math
import random
from dataclasses import dataclass

from engine.runtime.memory import ModelManager
from engine.runtime.scheduler import Entry, Policy, Scheduler

SERVICE_S = 1.0
LOAD_S = 10.0
MODELS = ("m1", "m2", "m3", "m4")
GB = 2**30


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Job:
    at: float
    cls: int
    model: str
    user: str


@dataclass
class Stats:
    loads: int
    makespan: float
    waits: dict[int, list[float]]
    cold_passed: list[float]           # jobs of the rarer models (all but m1): time later jobs ran first

    def max_wait(self) -> float:
        return max(w for ws in self.waits.values() for w in ws)


def p95(values: list[float]) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, math.ceil(0.95 * len(s)) - 1)]


async def simulate(trace: list[Job], policy: Policy) -> Stats:
    clock = Clock()
    mm = ModelManager(load=lambda name, device: (name, GB), unload=lambda inst: None,
                      size_of=lambda name: GB, budgets={"cpu": 2 * GB}, keep_alive_s=0, clock=clock)
    sched = Scheduler(dispatch=None, resident_models=mm.resident_names, clock=clock, policy=policy)
    pending = sorted(trace, key=lambda j: j.at)
    waits: dict[int, list[float]] = {0: [], 1: [], 2: []}
    i, done = 0, 0
    cold: list[float] = []
    while done < len(pending):
        while i < len(pending) and pending[i].at <= clock.now:
            j = pending[i]
            sched.submit(Entry(f"j{i}", j.cls, j.model, j.user, j.at), force=True)
            i += 1
        entry = sched.take_next()
        if entry is None:                          # idle until the next arrival
            clock.now = pending[i].at
            continue
        waits[entry.cls].append(clock.now - entry.arrived)
        if entry.model != "m1":
            cold.append(entry.passed_s)
        before = mm.loads
        await mm.acquire(entry.model)
        cost = SERVICE_S + (LOAD_S if mm.loads > before else 0.0)
        clock.now += cost
        mm.release(entry.model)
        sched.finished(entry, SERVICE_S)
        done += 1
    await mm.close()
    return Stats(mm.loads, clock.now, waits, cold)


def mixed_trace(n: int = 240, gap_s: float = 2.0, seed: int = 7) -> list[Job]:
    """Class-1 jobs over four models (popularity 40/30/20/10 %), Poisson arrivals."""
    rng = random.Random(seed)
    t, out = 0.0, []
    for k in range(n):
        t += rng.expovariate(1 / gap_s)
        model = rng.choices(MODELS, weights=(4, 3, 2, 1))[0]
        out.append(Job(t, 1, model, f"u{k % 17}"))
    return out


def flood_trace(seed: int = 11) -> list[Job]:
    """A burst of 300 class-1 jobs at once over four models, and a class-0 job (a DM) every
    7 s meanwhile, on random models."""
    rng = random.Random(seed)
    out = [Job(rng.uniform(0, 1), 1, rng.choice(MODELS), f"bulk{k % 23}") for k in range(300)]
    out += [Job(5.0 + 7.0 * k, 0, rng.choice(MODELS), f"dm{k}") for k in range(40)]
    return out


def starve_trace() -> list[Job]:
    """A steady stream of jobs for one warm model, a little faster than it is served, and now
    and then a job for another model (cold: the others take turns in the second slot)."""
    out = [Job(0.95 * k, 1, "m1", f"u{k % 13}") for k in range(400)]
    out += [Job(10.0 + 40.0 * k, 1, ("m2", "m3", "m4")[k % 3], f"rare{k}") for k in range(9)]
    return out


def run() -> list[tuple[str, object, str]]:
    trace = mixed_trace()
    big = 10**9
    fifo = asyncio.run(simulate(trace, Policy(aging_s=0.0, queue_max=big, user_queue_max=big)))
    greedy = asyncio.run(simulate(trace, Policy(aging_s=math.inf, queue_max=big, user_queue_max=big)))
    confab = asyncio.run(simulate(trace, Policy(aging_s=30.0, queue_max=big, user_queue_max=big)))
    flood = asyncio.run(simulate(flood_trace(), Policy(aging_s=30.0, queue_max=big, user_queue_max=big)))
    fifo_flood = asyncio.run(simulate(flood_trace(), Policy(aging_s=0.0, queue_max=big, user_queue_max=big)))
    big_policy = dict(queue_max=big, user_queue_max=big)
    starve = starve_trace()
    starve_greedy = asyncio.run(simulate(starve, Policy(aging_s=math.inf, **big_policy)))
    starve_confab = asyncio.run(simulate(starve, Policy(aging_s=30.0, **big_policy)))
    desc = f"{len(trace)} jobs, 4 models, 2 fit; load {LOAD_S:g} s, service {SERVICE_S:g} s"
    return [
        ("trace", len(trace), desc),
        ("loads FIFO", fifo.loads, ""),
        ("loads affinity, no aging", greedy.loads, ""),
        ("loads Confab (aging 30 s)", confab.loads, ""),
        ("loads Confab / FIFO", confab.loads / fifo.loads, "goal <= 0.333"),
        ("makespan FIFO s", fifo.makespan, ""),
        ("makespan affinity, no aging s", greedy.makespan, ""),
        ("makespan Confab s", confab.makespan, ""),
        ("max wait FIFO s", fifo.max_wait(), ""),
        ("max wait affinity, no aging s", greedy.max_wait(), ""),
        ("max wait Confab s", confab.max_wait(), ""),
        ("starve trace: cold jobs passed over for, no aging s", max(starve_greedy.cold_passed),
         "400 jobs of a warm model every 0.95 s, 9 of cold ones: later jobs run first until the stream ends"),
        ("starve trace: cold jobs passed over for, Confab s", max(starve_confab.cold_passed),
         "bounded: aging 30 s + one run"),
        ("starve trace: max wait of any job (no aging / Confab) s",
         f"{max(starve_greedy.max_wait(), 0):.0f} / {max(starve_confab.max_wait(), 0):.0f}",
         "all jobs; Confab's includes the backlog of older jobs"),
        ("p95 wait FIFO s", p95(fifo.waits[1]), ""),
        ("p95 wait Confab s", p95(confab.waits[1]), ""),
        ("class-0 p95 wait in a class-1 flood s", p95(flood.waits[0]),
         f"{len(flood.waits[0])} DMs among 300 bulk jobs; one service + a load is {SERVICE_S + LOAD_S:g} s"),
        ("class-0 max wait in the flood s", max(flood.waits[0]), ""),
        ("class-1 loads in the flood (FIFO / Confab)", f"{fifo_flood.loads} / {flood.loads}", ""),
    ]


if __name__ == "__main__":
    for row in run():
        print(*row, sep="\t")
