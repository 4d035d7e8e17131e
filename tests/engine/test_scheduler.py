"""The scheduler's rules, as properties over random arrival traces on simulated time.

The simulation drives the real `Scheduler` (submit / take_next / finished / cancel_queued) on one
server: a job runs for its model's service time, plus a load when its model is not resident;
the server keeps the `slots` most recently used models resident.
"""
from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import EngineBusy, UserQueueFull
from engine.runtime.scheduler import Entry, Policy, Scheduler, can_start, order, pick_next

MODELS = ("a", "b", "c", "d")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Arrival:
    at: float
    cls: int
    model: str
    user: str
    cancel_after: float | None = None   # cancel this long after arrival (queued or running)


@dataclass
class Run:
    entry: Entry
    start: float
    end: float
    cancelled: bool = False


@dataclass
class Outcome:
    runs: list[Run] = field(default_factory=list)
    cancelled_queued: list[Entry] = field(default_factory=list)
    rejected: list[Arrival] = field(default_factory=list)
    service: dict[str, float] = field(default_factory=dict)
    load: float = 0.0


def simulate(trace: list[Arrival], policy: Policy, service: dict[str, float], load: float,
             slots: int = 1) -> Outcome:
    clock = Clock()
    resident: list[str] = []           # most recently used last
    sched = Scheduler(dispatch=None, resident_models=lambda: list(resident), clock=clock,
                      policy=policy)
    out = Outcome(service=service, load=load)
    pending = sorted(trace, key=lambda a: a.at)
    cancels: list[tuple[float, str]] = []     # (when, job id)
    running: Run | None = None
    seen_ids: set[str] = set()
    i = 0

    def next_time() -> float | None:
        times = []
        if i < len(pending):
            times.append(pending[i].at)
        if running is not None:
            times.append(running.end)
        if cancels:
            times.append(min(c[0] for c in cancels))
        return min(times) if times else None

    while True:
        # Start the next job whenever the server is free.
        if running is None:
            entry = sched.take_next()
            if entry is not None:
                assert entry.job_id not in seen_ids, "a job ran twice"
                seen_ids.add(entry.job_id)
                cost = service[entry.model] + (0 if entry.model in resident else load)
                if entry.model in resident:
                    resident.remove(entry.model)
                resident.append(entry.model)
                del resident[:-slots]
                running = Run(entry, clock.now, clock.now + cost)
                continue
        t = next_time()
        if t is None:
            break
        clock.now = t
        if running is not None and running.end <= t:
            sched.finished(running.entry, running.end - running.start)
            out.runs.append(running)
            running = None
            continue
        due = [c for c in cancels if c[0] <= t]
        if due:
            for c in due:
                cancels.remove(c)
                gone = sched.cancel_queued(c[1])
                if gone is not None:
                    out.cancelled_queued.append(gone)
                elif running is not None and running.entry.job_id == c[1]:
                    # A running job stops at its next step: here, at once.
                    running.end, running.cancelled = t, True
            continue
        a = pending[i]
        i += 1
        entry = Entry(f"j{i}", a.cls, a.model, a.user, clock.now, payload=a)
        try:
            sched.submit(entry)
        except EngineBusy:
            out.rejected.append(a)
            continue
        assert len(sched.waiting) <= policy.queue_max
        if a.cancel_after is not None:
            cancels.append((a.at + a.cancel_after, entry.job_id))
    assert not sched.waiting and not sched.running
    return out


@st.composite
def traces(draw, classes=(0, 1, 2), max_jobs=60, cancels=True):
    n = draw(st.integers(1, max_jobs))
    t = 0.0
    out = []
    for _ in range(n):
        t += draw(st.sampled_from([0.0, 0.0, 0.5, 1.0, 3.0, 10.0, 40.0]))
        cancel = draw(st.one_of(st.none(), st.sampled_from([0.0, 0.5, 2.0, 20.0]))) if cancels else None
        out.append(Arrival(t, draw(st.sampled_from(classes)), draw(st.sampled_from(MODELS)),
                           f"u{draw(st.integers(0, 5))}", cancel))
    return out


SERVICE = {"a": 1.0, "b": 2.0, "c": 0.5, "d": 3.0}
LOAD = 20.0
POLICY = Policy(aging_s=30.0, promote_s=120.0, queue_max=1000, user_queue_max=1000)
# promotion earlier than aging: a promoted class-2 job must still not pass an older class-1 job
POLICIES = (POLICY, Policy(aging_s=30.0, promote_s=10.0, queue_max=1000, user_queue_max=1000))
HYP = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run_time(run: Run) -> float:
    return run.end - run.start


@HYP
@given(traces(), st.sampled_from([1, 2]), st.sampled_from(POLICIES))
def test_a_more_urgent_job_never_starts_after_a_less_urgent_later_arrival(trace, slots, policy):
    out = simulate(trace, policy, SERVICE, LOAD, slots)
    for a in out.runs:
        for b in out.runs:
            if a.entry.cls < b.entry.cls and b.entry.arrived > a.entry.arrived:
                assert a.start <= b.start, (a.entry, b.entry)


@HYP
@given(traces(), st.sampled_from([1, 2]))
def test_nothing_lost_nothing_run_twice(trace, slots):
    out = simulate(trace, POLICY, SERVICE, LOAD, slots)
    ran = [r.entry.job_id for r in out.runs]
    assert len(ran) == len(set(ran))
    cancelled = {e.job_id for e in out.cancelled_queued}
    assert not cancelled & set(ran)
    assert len(ran) + len(cancelled) + len(out.rejected) == len(trace)
    assert not out.rejected   # the bounds are far away in this test


def passed_over(j: Run, runs: list[Run], since: float = -math.inf) -> float:
    """Run time of jobs that came later than j, were not more urgent, and went before it."""
    return sum(run_time(k) for k in runs
               if k.entry.arrived > j.entry.arrived and min(j.entry.cls, 1) <= k.entry.cls
               and since <= k.start < j.start)


@HYP
@given(traces(classes=(1,)), st.sampled_from([1, 2]))
def test_affinity_never_delays_a_job_beyond_the_aging_bound_plus_one_service(trace, slots):
    out = simulate(trace, POLICY, SERVICE, LOAD, slots)
    one_run = max(SERVICE.values()) + LOAD
    for j in out.runs:
        assert passed_over(j, out.runs) <= POLICY.aging_s + one_run + 1e-9, j.entry


def test_affinity_bound_on_a_warm_flood():
    """A cold job among a steady stream of warm ones is passed over for aging_s plus one
    service time at most."""
    trace = [Arrival(0.0, 1, "b", "u9"), Arrival(0.0, 1, "a", "u0")]   # b first: b is resident
    trace += [Arrival(0.01 + 0.9 * k, 1, "b", f"u{k % 5}") for k in range(200)]
    out = simulate(trace, POLICY, {"a": 1.0, "b": 1.0}, LOAD)
    cold = next(r for r in out.runs if r.entry.model == "a")
    assert cold.start - cold.entry.arrived > 1.0          # affinity did pass it over ...
    first_b = out.runs[0]                                  # older: FIFO would run it first too
    assert first_b.entry.model == "b" and run_time(first_b) == LOAD + 1.0
    assert passed_over(cold, out.runs) <= POLICY.aging_s + 1.0         # ... for a bounded time
    assert cold.start - cold.entry.arrived <= run_time(first_b) + POLICY.aging_s + 1.0


@HYP
@given(traces(classes=(1, 2)))
def test_class_2_is_promoted_after_its_bound(trace):
    out = simulate(trace, POLICY, SERVICE, LOAD)
    one_run = max(SERVICE.values()) + LOAD
    for j in out.runs:
        if j.entry.cls == 2:
            # once promoted, later jobs pass it for at most the aging bound (plus one run)
            promoted = j.entry.arrived + POLICY.promote_s
            assert passed_over(j, out.runs, since=promoted) <= POLICY.aging_s + one_run + 1e-9, j.entry


def test_class_2_runs_during_a_class_1_flood():
    flood = [Arrival(0.5 * k, 1, "a", f"u{k % 7}") for k in range(600)]   # never idle
    trace = [Arrival(0.0, 2, "b", "bulk")] + flood
    out = simulate(trace, POLICY, {"a": 1.0, "b": 1.0}, LOAD)
    bulk = next(r for r in out.runs if r.entry.cls == 2)
    last_flood = max(r.start for r in out.runs if r.entry.cls == 1)
    assert bulk.start < last_flood                          # it did not wait for the flood to end
    assert bulk.start <= POLICY.promote_s + 1.0 + 1e-9      # promoted, then first in line


@HYP
@given(traces(cancels=False), st.integers(1, 6), st.integers(1, 4))
def test_the_queue_bound_and_the_per_user_cap_hold(trace, queue_max, user_max):
    policy = Policy(aging_s=30, promote_s=120, queue_max=queue_max, user_queue_max=user_max)
    out = simulate(trace, policy, SERVICE, LOAD)   # simulate asserts len(waiting) <= queue_max
    assert len(out.runs) + len(out.rejected) == len(trace)


def entry(job_id, cls=1, model="a", user="u", arrived=0.0):
    return Entry(job_id, cls, model, user, arrived)


def test_engine_busy_carries_retry_after():
    clock = Clock()
    sched = Scheduler(None, lambda: [], clock, Policy(queue_max=2, user_queue_max=5))
    sched.submit(entry("1", user="x"))
    sched.submit(entry("2", user="y"))
    with pytest.raises(EngineBusy) as e:
        sched.submit(entry("3", user="z"))
    assert not isinstance(e.value, UserQueueFull)
    assert e.value.retry_after >= 1.0 and e.value.status == 429
    assert [w.job_id for w in sched.waiting] == ["1", "2"]
    # a job accepted before a restart is queued whatever the bound
    sched.submit(entry("4"), force=True)
    assert len(sched.waiting) == 3


def test_user_queue_full_is_per_user():
    sched = Scheduler(None, lambda: [], Clock(), Policy(queue_max=10, user_queue_max=2))
    sched.submit(entry("1", user="x"))
    sched.submit(entry("2", user="x"))
    with pytest.raises(UserQueueFull) as e:
        sched.submit(entry("3", user="x"))
    assert e.value.retry_after >= 1.0
    sched.submit(entry("4", user="y"))          # someone else still gets in
    assert sched.cancel_queued("1") is not None
    sched.submit(entry("5", user="x"))          # a cancel frees the user's place
    with pytest.raises(UserQueueFull):
        sched.submit(entry("6", user="x"))
    # running jobs do not count against the cap
    assert sched.take_next().job_id == "2"
    sched.submit(entry("7", user="x"))


def test_cancel_queued_and_unknown():
    sched = Scheduler(None, lambda: [], Clock(), Policy())
    sched.submit(entry("1"))
    sched.submit(entry("2"))
    assert sched.cancel_queued("2").job_id == "2"
    assert sched.cancel_queued("2") is None
    assert sched.cancel_queued("nope") is None
    running = sched.take_next()
    assert running.job_id == "1"
    assert sched.cancel_queued("1") is None     # running: the engine's cancel flag stops it
    sched.finished(running)
    assert sched.take_next() is None


def test_pick_next_order_and_positions():
    p = Policy(aging_s=30, promote_s=120)
    waiting = [entry("bulk", cls=2, arrived=0), entry("cold", model="x", arrived=1),
               entry("warm", model="w", arrived=2), entry("dm", cls=0, model="x", arrived=3)]
    assert pick_next(waiting, ["w"], 5, p).job_id == "dm"
    assert [e.job_id for e in order(waiting, ["w"], 5, p)] == ["dm", "cold", "warm", "bulk"]
    # dm's model x is resident after it runs, so cold follows; without dm, warm goes first
    assert [e.job_id for e in order(waiting[:3], ["w"], 5, p)] == ["warm", "cold", "bulk"]
    # once later jobs have run before it for the aging bound, the cold job goes first
    waiting[1].passed_s = 30.0
    assert [e.job_id for e in order(waiting[:3], ["w"], 31.5, p)] == ["cold", "warm", "bulk"]
    waiting[1].passed_s = 0.0
    # after its own bound the bulk job competes in class 1: passed over long enough, it goes first
    waiting[0].passed_s = 30.0
    assert [e.job_id for e in order(waiting[:3], ["w"], 119, p)][0] == "warm"
    assert [e.job_id for e in order(waiting[:3], ["w"], 121, p)][0] == "bulk"
    assert pick_next([], ["w"], 0, p) is None


def test_a_promoted_job_never_passes_an_older_class_1_job():
    p = Policy(aging_s=30, promote_s=10)
    waiting = [entry("cold", model="x", arrived=0), entry("bulk", cls=2, model="w", arrived=1)]
    assert pick_next(waiting, ["w"], 15, p).job_id == "cold"
    trace = [Arrival(0, 1, "a", "u0"), Arrival(0.5, 1, "b", "u1"), Arrival(1, 2, "a", "u2")]
    out = simulate(trace, p, {"a": 1.0, "b": 1.0}, LOAD)
    assert [r.entry.model + str(r.entry.cls) for r in out.runs] == ["a1", "b1", "a2"]


def test_position_and_eta():
    clock = Clock()
    sched = Scheduler(None, lambda: ["a"], clock, Policy())
    for k in range(3):
        sched.submit(entry(f"j{k}", user=f"u{k}"))
    first = sched.take_next()
    sched.finished(first, 2.0)
    pos = sched.position("j2")
    assert pos is not None and pos[0] == 2 and pos[1] == pytest.approx(2.0)
    assert sched.position("nope") is None


# -- the real dispatch loop ----------------------------------------------------------------------

async def test_dispatch_loop_runs_by_class_then_affinity_and_cancels():
    started: list[str] = []
    gates: dict[str, asyncio.Event] = {}
    resident: set[str] = {"warm"}
    first_started = asyncio.Event()

    async def dispatch(e: Entry) -> None:
        started.append(e.job_id)
        first_started.set()
        gate = gates.setdefault(e.job_id, asyncio.Event())
        try:
            await gate.wait()
        finally:
            resident.add(e.model)

    sched = Scheduler(dispatch, lambda: resident, policy=Policy(queue_max=50, user_queue_max=50))
    sched.start()
    try:
        sched.submit(entry("blocker", cls=1, model="warm"))
        await asyncio.wait_for(first_started.wait(), 5)
        # queued while the blocker runs (the running job aside, nothing preempts it)
        sched.submit(entry("bulk", cls=2, model="warm", arrived=sched.clock()))
        sched.submit(entry("cold", cls=1, model="cold", arrived=sched.clock()))
        sched.submit(entry("warm1", cls=1, model="warm", arrived=sched.clock()))
        sched.submit(entry("dm", cls=0, model="cold", arrived=sched.clock()))
        sched.submit(entry("gone", cls=0, model="warm", arrived=sched.clock()))
        assert sched.cancel_queued("gone") is not None
        for job in ("blocker", "dm", "warm1", "cold", "bulk"):
            gates.setdefault(job, asyncio.Event()).set()
        for _ in range(200):
            if len(started) == 5 and not sched.running:
                break
            await asyncio.sleep(0.01)
        # dm loads "cold"; with cold resident, cold (older) and warm1 are both warm: FIFO
        assert started == ["blocker", "dm", "cold", "warm1", "bulk"]
        assert not sched.waiting and not sched.running
    finally:
        await sched.stop()


async def test_dispatch_loop_survives_a_failing_dispatch_and_honours_concurrency():
    seen: list[str] = []
    live = 0
    peak = 0

    async def dispatch(e: Entry) -> None:
        nonlocal live, peak
        live += 1
        peak = max(peak, live)
        seen.append(e.job_id)
        try:
            await asyncio.sleep(0.01)
            if e.job_id == "boom":
                raise RuntimeError("a bug in dispatch")
        finally:
            live -= 1

    sched = Scheduler(dispatch, lambda: [], concurrency=2, policy=Policy(queue_max=50, user_queue_max=50))
    sched.start()
    try:
        for k in range(6):
            sched.submit(entry(f"j{k}"))
        sched.submit(entry("boom"))
        sched.submit(entry("after"))

        async def drained():
            while len(seen) < 8 or sched.running or sched.waiting:
                await asyncio.sleep(0.01)
        await asyncio.wait_for(drained(), 10)
    finally:
        await sched.stop()
    assert sorted(seen) == sorted([f"j{k}" for k in range(6)] + ["boom", "after"])
    assert peak == 2


def running(*specs):
    out = []
    for i, (model, cls) in enumerate(specs):
        e = entry(f"r{i}", cls=cls, model=model)
        e.slots = 4 if model == "chat" else 1
        out.append(e)
    return out


def test_a_chat_runner_takes_jobs_up_to_its_slots_one_kept_for_class_0():
    three = running(("chat", 1), ("chat", 1), ("chat", 2))
    assert not can_start(entry("x", cls=1, model="chat"), three, 4, 1)   # the fourth is class 0's
    assert not can_start(entry("x", cls=2, model="chat"), three, 4, 1)
    assert can_start(entry("dm", cls=0, model="chat"), three, 4, 1)
    assert can_start(entry("x", cls=1, model="chat"), three[:2], 4, 1)
    full = running(("chat", 1), ("chat", 1), ("chat", 1), ("chat", 0))
    assert not can_start(entry("dm", cls=0, model="chat"), full, 4, 1)
    # another model's jobs do not take the runner's slots, nor do its slots block them
    assert can_start(entry("w", cls=1, model="whisper"), full, 1, 1)


def test_models_without_slots_run_one_job_at_a_time_on_the_native_thread():
    busy = running(("whisper", 1))
    assert not can_start(entry("x", cls=0, model="whisper"), busy, 1, 1)
    assert not can_start(entry("x", cls=1, model="piper"), busy, 1, 1)       # concurrency 1
    assert can_start(entry("x", cls=1, model="piper"), busy, 1, 2)
    assert can_start(entry("x", cls=1, model="chat"), busy, 4, 1)           # a runner beside it


async def test_the_dispatch_loop_fills_a_runners_slots_and_a_dm_passes_a_full_queue():
    started: list[str] = []
    release = asyncio.Event()

    async def dispatch(e: Entry) -> None:
        started.append(e.job_id)
        await release.wait()

    sched = Scheduler(dispatch, lambda: ["chat"], policy=Policy(queue_max=50, user_queue_max=50),
                      slots=lambda model: 3)
    sched.start()
    try:
        for k in range(5):
            sched.submit(entry(f"c{k}", cls=1, model="chat"))

        async def settled(n):
            while len(started) < n:
                await asyncio.sleep(0.01)
        await asyncio.wait_for(settled(2), 5)
        # the loop decides every start in one pass: two of three slots, one kept for class 0
        assert started == ["c0", "c1"] and len(sched.running) == 2 and len(sched.waiting) == 3
        sched.submit(entry("dm", cls=0, model="chat"))
        await asyncio.wait_for(settled(3), 5)
        assert started[-1] == "dm"
    finally:
        release.set()
        await sched.stop()
