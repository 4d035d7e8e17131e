"""The queue and its order: priority class, then model affinity, with aging.

`pick_next` is the whole policy as a pure function; `Scheduler` keeps the bounded queue around
it and hands jobs to a dispatch coroutine. The clock comes in through the constructor, so the
rules are tested on simulated time.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Awaitable, Callable, Iterable, Iterator, Sequence

from engine.errors import EngineBusy, UserQueueFull
from engine.priority import BACKGROUND, INTERACTIVE, URGENT

log = logging.getLogger(__name__)
DEFAULT_SERVICE_S = 5.0     # a model's run time per job until one was measured


@dataclass(frozen=True)
class Policy:
    aging_s: float = 30.0          # affinity may pass a class-1 job over for at most this long
                                   # (the run time of later jobs that went before it)
    promote_s: float = 120.0       # a class-2 job waiting this long competes in class 1
    queue_max: int = 256
    user_queue_max: int = 8


@dataclass(eq=False)
class Entry:
    """A queued job as the scheduler sees it."""
    job_id: str
    cls: int
    model: str
    user: str
    arrived: float
    seq: int = 0
    payload: object = None
    passed_s: float = 0.0   # run time of later jobs that went before it (what affinity cost it)
    slots: int = 1          # its model's slots when it started

    def waited(self, now: float) -> float:
        return now - self.arrived


EXACT_POSITION_MAX = 64   # queues longer than this get an estimated place in line


def _fifo(entry: Entry) -> tuple[float, int]:
    return (entry.arrived, entry.seq)


def pick_next(waiting: Sequence[Entry], resident: Iterable[str], now: float,
              policy: Policy) -> Entry | None:
    if not waiting:
        return None
    urgent = [e for e in waiting if e.cls == URGENT]
    if urgent:
        return min(urgent, key=_fifo)
    interactive = [e for e in waiting if e.cls == INTERACTIVE]
    promoted = [e for e in waiting if e.cls == BACKGROUND and e.waited(now) >= policy.promote_s]
    pool = interactive + promoted
    if not pool:
        return min(waiting, key=_fifo)
    # Aging bounds what affinity costs a job: the time later jobs ran before it. (Its plain
    # waiting time would not do: under a backlog every job is "old", and oldest-first is FIFO,
    # loading a model for nearly every job.)
    aged = [e for e in pool if e.passed_s >= policy.aging_s]
    if aged:
        choice = min(aged, key=_fifo)
    else:
        warm = set(resident)
        warm_jobs = [e for e in pool if e.model in warm]
        choice = min(warm_jobs, key=_fifo) if warm_jobs else min(pool, key=_fifo)
    if choice.cls == BACKGROUND:
        # A promoted job competes in class 1 but never passes a class-1 job that came first.
        earlier = [e for e in interactive if _fifo(e) < _fifo(choice)]
        if earlier:
            choice = min(earlier, key=_fifo)
    return choice


def order(waiting: Sequence[Entry], resident: Iterable[str], now: float, policy: Policy) -> list[Entry]:
    """The order in which the queue would run if nothing else arrived (for positions and ETAs)."""
    return list(replay(waiting, resident, now, policy))


def replay(waiting: Sequence[Entry], resident: Iterable[str], now: float,
           policy: Policy) -> Iterator[Entry]:
    """`order`, one entry at a time, so that a caller looking for one job can stop there."""
    rest, warm = list(waiting), set(resident)
    while rest:
        nxt = pick_next(rest, warm, now, policy)
        yield nxt
        rest.remove(nxt)
        warm.add(nxt.model)


def can_start(entry: Entry, running: Iterable[Entry], slots: int | None, concurrency: int) -> bool:
    """Whether `entry` may start beside the jobs running now. A model with several slots (a
    chat runner) takes that many jobs at once, one of them held back for class 0 whenever
    class 1 and 2 fill the others; models without slots run one job at a time, and at most
    `concurrency` of those run together (with `slots` None, any model's)."""
    running = list(running)
    same = sum(1 for r in running if r.model == entry.model)
    if slots is None:
        return sum(1 for r in running if r.slots <= 1) < concurrency
    if slots > 1:
        reserve = 1 if entry.cls > URGENT else 0
        return same < slots - reserve
    single = sum(1 for r in running if r.slots <= 1)
    return same == 0 and single < concurrency


class Scheduler:
    """A bounded priority queue feeding `dispatch(entry)`: a job starts when its model has a
    free slot (see `can_start`), the order among those that may start is `pick_next`'s."""

    def __init__(self, dispatch: Callable[[Entry], Awaitable[None]],
                 resident_models: Callable[[], Iterable[str]],
                 clock: Callable[[], float] = time.monotonic,
                 policy: Policy = Policy(), concurrency: int = 1,
                 slots: Callable[[str], int] | None = None):
        self._dispatch = dispatch
        self._resident = resident_models
        self.clock = clock
        self.policy = policy
        self.concurrency = concurrency
        self._slots = slots
        self._waiting: list[Entry] = []           # guarded by running on one event loop
        self._per_user: dict[str, int] = defaultdict(int)
        self._running: dict[str, Entry] = {}
        self._seq = 0
        self._wake: asyncio.Event | None = None
        self._service_s: dict[str, float] = {}
        self._loop_task: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()

    # -- the queue -------------------------------------------------------------------------

    def submit(self, entry: Entry, force: bool = False) -> Entry:
        """Queue an entry, or raise EngineBusy; `force` is for jobs already accepted earlier."""
        if not force:
            if len(self._waiting) >= self.policy.queue_max:
                raise EngineBusy(f"The queue is full ({self.policy.queue_max} jobs waiting). "
                                 "Please try again shortly.", retry_after=self.retry_after())
            if self._per_user[entry.user] >= self.policy.user_queue_max:
                raise UserQueueFull(
                    f"You already have {self._per_user[entry.user]} jobs waiting; the limit is "
                    f"{self.policy.user_queue_max}. Wait for one to finish or cancel one.",
                    retry_after=self.retry_after(entry.user))
        self._seq += 1
        entry.seq = self._seq
        self._waiting.append(entry)
        self._per_user[entry.user] += 1
        self._poke()
        return entry

    def take_next(self) -> Entry | None:
        """Remove and return the entry that should run now (the dispatch loop's one decision)."""
        running = list(self._running.values())
        slots: dict[str, int | None] = {}
        ready = []
        for e in self._waiting:
            if e.model not in slots:
                slots[e.model] = max(1, self._slots(e.model)) if self._slots else None
            if can_start(e, running, slots[e.model], self.concurrency):
                ready.append(e)
        entry = pick_next(ready, self._resident(), self.clock(), self.policy)
        if entry is not None:
            self._remove(entry)
            entry.slots = slots[entry.model] or 1
            self._running[entry.job_id] = entry
        return entry

    def poke(self) -> None:
        """Look at the queue again (a model's capacity changed)."""
        self._poke()

    def finished(self, entry: Entry, service_s: float | None = None) -> None:
        self._running.pop(entry.job_id, None)
        if service_s is not None:
            # It went before these older jobs of its class (class 2 counts as the class 1 it is
            # promoted into): charge its time to them.
            key, cls = _fifo(entry), entry.cls
            for waiting in self._waiting:   # (inline: this runs for every job over the whole queue)
                if (waiting.arrived, waiting.seq) < key and min(waiting.cls, INTERACTIVE) <= cls:
                    waiting.passed_s += service_s
            old = self._service_s.get(entry.model)
            self._service_s[entry.model] = service_s if old is None else 0.7 * old + 0.3 * service_s
        self._poke()

    def cancel_queued(self, job_id: str) -> Entry | None:
        for entry in self._waiting:
            if entry.job_id == job_id:
                self._remove(entry)
                return entry
        return None

    def _remove(self, entry: Entry) -> None:
        self._waiting.remove(entry)
        self._per_user[entry.user] -= 1
        if self._per_user[entry.user] <= 0:
            del self._per_user[entry.user]

    # -- what people see --------------------------------------------------------------------

    @property
    def waiting(self) -> list[Entry]:
        return list(self._waiting)

    @property
    def running(self) -> list[Entry]:
        return list(self._running.values())

    def depth_by_class(self) -> dict[int, int]:
        out = {URGENT: 0, INTERACTIVE: 0, BACKGROUND: 0}
        for e in self._waiting:
            out[e.cls] += 1
        return out

    def service_estimate(self, model: str) -> float:
        return self._service_s.get(model, DEFAULT_SERVICE_S)

    def position(self, job_id: str) -> tuple[int, float] | None:
        """1-based place in line and the estimated seconds until it starts.

        Exact (the policy replayed) for short queues; for long ones, first come first served
        within each class, which is close and keeps a submit O(n) instead of O(n^2)."""
        now = self.clock()
        per_slot = 1 / max(1, self.concurrency)
        eta = sum(self.service_estimate(e.model) for e in self._running.values()) * per_slot
        if len(self._waiting) <= EXACT_POSITION_MAX:
            for i, entry in enumerate(replay(self._waiting, self._resident(), now, self.policy), 1):
                if entry.job_id == job_id:
                    return i, eta
                eta += self.service_estimate(entry.model) * per_slot
            return None
        target = next((e for e in self._waiting if e.job_id == job_id), None)
        if target is None:
            return None
        key = (target.cls, target.arrived, target.seq)
        ahead: dict[str, int] = defaultdict(int)     # per model, as the estimates are
        for e in self._waiting:
            if (e.cls, e.arrived, e.seq) < key:
                ahead[e.model] += 1
        eta += sum(self.service_estimate(model) * n for model, n in ahead.items()) * per_slot
        return sum(ahead.values()) + 1, eta

    def retry_after(self, user: str | None = None) -> float:
        jobs = [e for e in self._waiting if user is None or e.user == user] or self._waiting
        ahead = min(len(jobs), 1 + len(self._waiting) // 4)
        return max(1.0, min(300.0, ahead * min((self.service_estimate(e.model) for e in jobs), default=5.0)))

    # -- the dispatch loop ------------------------------------------------------------------

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._loop_task = asyncio.create_task(self._loop(), name="confab-scheduler")

    async def stop(self) -> None:
        if self._loop_task:
            self._loop_task.cancel()
            try:
                await self._loop_task
            except asyncio.CancelledError:
                pass
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _loop(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while True:
                entry = self.take_next()
                if entry is None:
                    break
                task = asyncio.create_task(self._run(entry), name=f"confab-job-{entry.job_id}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _run(self, entry: Entry) -> None:
        started = self.clock()
        try:
            await self._dispatch(entry)
        except Exception:  # dispatch reports its own errors to the job; never kill the loop
            log.exception("dispatch of %s failed", entry.job_id)
        finally:
            self.finished(entry, self.clock() - started)
