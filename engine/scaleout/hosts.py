"""One front host and GPU workers, over the Redis queue.

The front host's engine (`front_engine`) is the one the bots and the API use: it checks and
stores a job as usual, and its `RedisDispatcher` queues it in Redis instead of running it and
turns the events and results the workers send back into the same handles; it has no models,
scheduler or model thread of its own. `Worker` runs on each GPU host: it takes the next job by
the scheduler's rules for the models it has loaded, runs it on its own engine's LocalDispatcher
(memory manager, executors, timeouts, cancel), streams its events back and keeps its lease while
it runs.

A job whose worker dies runs again on another when its lease runs out. Its answer is delivered
once: only the lease holder may publish, the front keeps the first result, and the text streamed
by a second attempt continues where the first one's stopped (chat jobs get a seed from their id
so that a second attempt says the same words).
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import zlib
from typing import Any

from engine import wire
from engine.config import ConfigError, Settings
from engine.errors import BackendFailed, ConfabError, EngineBusy, JobCancelled, UserQueueFull
from engine.jobs import Queued, Started, Token
from engine.priority import BACKGROUND, INTERACTIVE, URGENT
from engine.runtime.engine import Engine
from engine.runtime.handle import JobHandle
from engine.runtime.local import LocalDispatcher
from engine.runtime.memory import Resident
from engine.runtime.scheduler import DEFAULT_SERVICE_S, Entry
from engine.scaleout.redis_queue import RedisQueue, Taken
from models.registry import Registry

log = logging.getLogger(__name__)


def engine_for(settings: Settings, **kw) -> Engine:
    """The engine `confab run/serve` uses: in-process, or the front of a Redis queue."""
    if settings.queue_url:
        return front_engine(settings, RedisQueue(settings.queue_url), **kw)
    return Engine(settings, **kw)


def front_engine(settings: Settings, queue: RedisQueue, registry: Registry | None = None) -> Engine:
    """An engine whose jobs run on the workers that take them from `queue`."""
    return Engine(settings, registry, dispatcher=lambda engine: RedisDispatcher(engine, queue))


class _Stream:
    """What the front has shown of one job's text, across attempts."""

    def __init__(self):
        self.attempt = 0
        self.shown = ""        # text pushed to the handle so far
        self.current = ""      # text of the current attempt so far
        self.diverged = False  # a later attempt said something else than what was shown
        self.shown_by = 0      # the attempt that showed the first text
        self.next_event: dict[int, int] = {}   # per attempt, the number of the next new event

    def feed(self, attempt: int, text: str) -> str:
        """The part of `text` (a token of `attempt`) that was not shown yet; nothing once an
        attempt says something else than what was shown (the seed gives the same words only
        where the numbers come out the same: another build, device or batch may not)."""
        if attempt < self.attempt or self.diverged:
            return ""
        if attempt > self.attempt:
            self.attempt, self.current = attempt, ""
        self.current += text
        n = min(len(self.current), len(self.shown))
        if self.current[:n] != self.shown[:n]:
            log.warning("attempt %d of a job says something else than what was shown", attempt)
            self.diverged = True
            return ""
        if len(self.current) <= len(self.shown):
            return ""
        new = self.current[len(self.shown):]
        self.shown_by = self.shown_by or attempt
        self.shown += new
        return new

    def fresh(self, attempt: int, n: str | None) -> bool:
        """Whether event number `n` of `attempt` is new (unnumbered events always are)."""
        if n is None:
            return True
        n = int(n)
        if n < self.next_event.get(attempt, 0):
            return False
        self.next_event[attempt] = n + 1
        return True

    def restarted(self) -> "_Stream":
        """The job queued again by a Redis that lost it: attempts count from one again, after
        what was shown."""
        fresh = _Stream()
        fresh.shown, fresh.diverged = self.shown, self.diverged
        return fresh

    def contradicts(self, attempt: int, result: Any) -> bool:
        """Whether the finished answer of a later attempt does not continue what was shown."""
        if self.diverged:
            return True
        text = getattr(result, "text", None)
        return (bool(self.shown) and attempt > self.shown_by and isinstance(text, str)
                and not text.startswith(self.shown))


class RedisDispatcher:
    """Runs the jobs of `engine` (an Engine, which stores them) on workers, via Redis."""

    concurrency = 1

    def __init__(self, engine: Engine, queue: RedisQueue):
        self.engine, self.queue = engine, queue
        self.policy = engine.policy
        self.clock = time.monotonic
        self.budgets: dict[str, int] = {}
        self.load_seconds: dict[str, float] = {}
        self._streams: dict[str, _Stream] = {}
        self._reader: asyncio.Task | None = None
        self._watcher: asyncio.Task | None = None
        self._positions: dict[str, tuple[int, float]] = {}
        self._pushes: set[asyncio.Task] = set()
        self._last_id = "$"
        self._push_order = asyncio.Lock()   # jobs reach Redis in the order they were accepted
        self._redis_run: str | None = None

    async def start(self) -> None:
        try:
            await self.queue.ping()
            self._last_id = await self.queue.last_event_id()
        except Exception as e:   # jobs are stored and wait; they are queued when Redis is back
            self._last_id = "0-0"
            log.warning("the queue at %s is not reachable yet (%s); accepted jobs wait for it",
                        self.queue.url, e)
        self._reader = asyncio.create_task(self._read_events(), name="confab-front-events")
        self._watcher = asyncio.create_task(self._watch_queue(), name="confab-front-positions")

    async def close(self) -> None:
        tasks = [t for t in (self._reader, self._watcher) if t]
        for task in tasks:
            task.cancel()
        # A read blocked in Redis can take a minute to hear its cancel (seen after Redis came
        # back from an outage): closing the client below ends it, so do not wait for it here.
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        for task in list(self._pushes):
            task.cancel()
        await asyncio.gather(*self._pushes, return_exceptions=True)
        await self.queue.close()
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    # -- accepting: stored by Engine.submit, then queued in Redis ------------------------------

    def check_capacity(self, user: str, admitting: dict[str, int]) -> None:
        policy = self.policy
        active = self.engine.active_jobs()
        if len(active) + sum(admitting.values()) >= policy.queue_max:
            raise EngineBusy(f"The queue is full ({policy.queue_max} jobs waiting). Please try "
                             "again shortly.", retry_after=5.0)
        mine = sum(1 for h in active if h.job.origin.user_key == user) + admitting.get(user, 0)
        if mine >= policy.user_queue_max:
            raise UserQueueFull(f"You already have {mine} jobs waiting; the limit is "
                                f"{policy.user_queue_max}. Wait for one to finish or cancel one.",
                                retry_after=5.0)

    def enqueue(self, handle: JobHandle) -> None:
        job = handle.job
        if getattr(job, "seed", 0) is None:     # the same words if a second worker runs it
            job.seed = zlib.crc32(job.id.encode())
        self._streams[job.id] = _Stream()
        task = asyncio.get_running_loop().create_task(self._push(handle))
        self._pushes.add(task)
        task.add_done_callback(self._pushes.discard)

    async def _push(self, handle: JobHandle) -> None:
        job, delay = handle.job, 0.2
        while True:
            try:
                async with self._push_order:
                    done = await self.queue.push(job.id, handle.priority, self.engine.base_of(job.model),
                                                 job.origin.user_key, wire.dumps(job))
                break
            except ConfabError:
                raise
            except Exception as e:   # Redis away: the job is in the store, keep trying
                log.warning("queueing %s in Redis failed (%s); retrying in %.1f s", job.id, e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        if done is not None:          # finished by a worker while this front was away
            await self._finished(job.id, "done", done)
        elif not handle.done:
            handle.push(Queued(await self.queue.depth(), 0.0))

    async def _check_redis_run(self) -> None:
        run = await self.queue.server_run()
        if self._redis_run is not None and run != self._redis_run:
            await self._requeue_lost()
        self._redis_run = run

    async def _requeue_lost(self) -> None:
        """Redis restarted: a job it no longer holds (it came back without its data, e.g. with
        no append-only file) is queued again, so that no accepted job waits forever."""
        for handle in self.engine.active_jobs():
            job = handle.job
            async with self._push_order:
                lost, done = await self.queue.requeue(job.id, handle.priority, self.engine.base_of(job.model),
                                                      job.origin.user_key, wire.dumps(job))
            if done is not None:
                await self._finished(job.id, "done", done)
            elif lost:
                log.warning("Redis came back without %s; it is queued again", job.id)
                if job.id in self._streams:
                    self._streams[job.id] = self._streams[job.id].restarted()
                handle.status = "queued"

    async def cancel(self, handle: JobHandle) -> bool:
        if handle.done:
            return False
        if await self.queue.cancel(handle.id) == 1:
            await self.engine.job_failed(handle, JobCancelled())
        return True   # a running job stops at its worker's next lease renewal

    def position(self, job_id: str) -> tuple[int, float] | None:
        """Place in line across all workers (by class, then arrival; refreshed every second)."""
        handle = self.engine.handle(job_id)
        if handle is None or handle.done or handle.status != "queued":
            return None
        return self._positions.get(job_id)

    # -- what the doors show: this host runs nothing and loads no model (its jobs are listed
    # from their handles)

    @property
    def waiting(self) -> list[Entry]:
        return []

    @property
    def running(self) -> list[Entry]:
        return []

    def depth_by_class(self) -> dict[int, int]:
        return {URGENT: 0, INTERACTIVE: 0, BACKGROUND: 0}

    def service_estimate(self, model: str) -> float:
        return DEFAULT_SERVICE_S

    def resident(self) -> list[Resident]:
        return []

    def resident_names(self) -> list[str]:
        return []

    async def _watch_queue(self, every_s: float = 1.0) -> None:
        while True:
            try:
                await self._check_redis_run()
                entries = sorted(await self.queue.waiting_entries(),
                                 key=lambda e: (e.cls, e.arrived, e.seq))
                eta, positions = 0.0, {}
                for place, entry in enumerate(entries, 1):
                    positions[entry.job_id] = (place, eta)
                    eta += self.service_estimate(entry.model)
                self._positions = positions
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.debug("reading the queue's order failed: %s", e)
            await asyncio.sleep(every_s)

    # -- results from the workers --------------------------------------------------------------

    async def _read_events(self) -> None:
        while True:
            try:
                batch = await self.queue.read_events(self._last_id, block_ms=1000)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("reading results from Redis failed (%s); retrying", e)
                await asyncio.sleep(1.0)
                continue
            for stream_id, fields in batch:
                self._last_id = stream_id
                try:
                    await self._on_event(fields)
                except Exception:
                    log.exception("a worker's event for %s could not be used", fields.get("job"))

    async def _on_event(self, fields: dict) -> None:
        job_id, kind = fields.get("job", ""), fields.get("kind", "")
        handle = self.engine.handle(job_id)
        if handle is None or handle.done:
            if kind in ("done", "failed") and handle is not None:
                await self.queue.forget(job_id)
            return
        attempt = int(fields.get("attempt") or 0)
        if kind == "event":
            if not self._streams[job_id].fresh(attempt, fields.get("n")):
                return          # a batch sent again after its reply was lost: already here
            event = wire.loads(fields["data"])
            if isinstance(event, Token):
                new = self._streams[job_id].feed(attempt, event.text)
                if new:
                    handle.push(Token(new))
            elif attempt >= self._streams[job_id].attempt:
                if isinstance(event, Started):
                    handle.status, handle.device = "running", event.device
                    await self.engine.store.set_status(job_id, "running")
                handle.push(event)
        elif kind == "requeued":
            log.info("%s went back to the queue (its worker stopped renewing its lease)", job_id)
            handle.status = "queued"
        elif kind in ("done", "failed"):
            await self._finished(job_id, kind, fields["data"], attempt)

    async def _finished(self, job_id: str, kind: str, data: str, attempt: int = 0) -> None:
        handle = self.engine.handle(job_id)
        if handle is None or handle.done:
            return
        stream = self._streams.pop(job_id, None)
        value = wire.loads(data)
        if kind == "done" and stream is not None and stream.contradicts(attempt, value):
            # as in-process (Engine: RunnerGone after tokens were shown): an answer spliced from
            # two different ones, or one that takes back what was shown, is worse than none
            await self.engine.job_failed(handle, BackendFailed(
                f"The chat model '{handle.job.model}' stopped answering in the middle of its answer "
                "(its worker stopped, and the worker that took it over said something else). "
                "Please ask again."))
        elif kind == "done":
            await self.engine.job_succeeded(handle, value)
        else:
            await self.engine.job_failed(handle, value if isinstance(value, ConfabError)
                             else BackendFailed(f"The job failed on its worker: {value}"))
        await self.queue.forget(job_id)


class Worker:
    """Takes jobs from Redis and runs them on a local engine, at most `concurrency` at a time."""

    def __init__(self, engine: Engine, queue: RedisQueue, name: str | None = None,
                 lease_s: float | None = None, poll_s: float = 0.5, flush_s: float = 0.05):
        if not isinstance(engine.dispatcher, LocalDispatcher):
            raise TypeError("a worker runs its jobs on an engine of its own (a LocalDispatcher)")
        self.engine, self.queue = engine, queue
        self.local: LocalDispatcher = engine.dispatcher
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.lease_s = lease_s or engine.settings.lease_s
        self.poll_s, self.flush_s = poll_s, flush_s
        self.concurrency = engine.settings.concurrency
        self.running: dict[str, asyncio.Task] = {}
        self.taken: list[tuple[str, int, float]] = []       # (job id, attempt, when) for tools and tests
        self.lost = 0

    async def run(self, stop: asyncio.Event) -> None:
        log.info("worker %s taking jobs from %s", self.name, self.queue.url)
        while not stop.is_set():
            if len(self.running) >= self.concurrency:
                await asyncio.wait([asyncio.ensure_future(stop.wait()), *self.running.values()],
                                   return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                taken = await self.queue.take(self.name, self.local.resident_names(),
                                              self.local.policy, self.lease_s)
            except Exception as e:
                log.warning("taking a job from Redis failed (%s); retrying", e)
                await asyncio.sleep(1.0)
                continue
            if taken is None:
                await self.queue.wait_for_work(self.poll_s)
                continue
            self.taken.append((taken.entry.job_id, taken.attempt, time.time()))
            task = asyncio.create_task(self._run(taken), name=f"confab-worker-{taken.entry.job_id}")
            self.running[taken.entry.job_id] = task
            task.add_done_callback(lambda _t, jid=taken.entry.job_id: self.running.pop(jid, None))
        if self.running:   # let what runs finish; its leases are kept meanwhile
            await asyncio.gather(*self.running.values(), return_exceptions=True)

    async def _run(self, taken: Taken) -> None:
        engine, entry = self.engine, taken.entry
        try:
            job = wire.loads(taken.job)
        except Exception as e:
            log.exception("job %s cannot be read", entry.job_id)
            await self.queue.finish(taken, "failed", wire.dumps(BackendFailed(f"The job cannot be read: {e}")))
            return
        handle = engine.track(job, entry.cls)
        pending: list[str] = []
        sending = asyncio.Lock()
        sent = [0]              # events of this attempt Redis has taken (each numbered)
        lost = asyncio.Event()

        async def pump() -> None:
            async for event in handle:
                if not isinstance(event, Queued):
                    pending.append(wire.dumps(event))

        async def flush() -> None:
            while True:
                await asyncio.sleep(self.flush_s)
                await send()

        async def send() -> None:
            async with sending:      # one batch at a time: in order, none twice
                if not pending:
                    return
                batch = pending[:]
                try:
                    held = await self.queue.publish(taken, batch, first=sent[0])
                except Exception as e:   # Redis away: keep them, in order, for when it is back
                    log.warning("%s: sending %s's events failed (%s); kept to send again", self.name, job.id, e)
                    return
                del pending[:len(batch)]
                sent[0] += len(batch)
                if not held:
                    lost.set()

        async def keep_lease() -> None:
            while True:   # at least every second: a cancel from the front is heard that soon
                await asyncio.sleep(min(self.lease_s / 3, 1.0))
                try:
                    state = await self.queue.renew(taken, self.lease_s)
                except Exception as e:   # Redis away: try again (if the lease ran out, it says 0)
                    log.warning("%s: renewing the lease on %s failed (%s); trying again", self.name, job.id, e)
                    continue
                if state == 0:
                    lost.set()
                    handle.cancel_flag.set()
                    return
                if state == 2:
                    handle.cancel_flag.set()

        began = time.monotonic()
        helpers = [asyncio.create_task(c) for c in (flush(), keep_lease())]
        pumping = asyncio.create_task(pump())
        try:
            await self.local.run(Entry(job.id, entry.cls, engine.base_of(job.model), entry.user,
                                       self.local.clock(), payload=job))
            await asyncio.wait_for(pumping, 10)
            try:
                value, kind = await handle.result(), "done"
            except ConfabError as e:
                value, kind = e, "failed"
            if not await self._finish(taken, kind, wire.dumps(value), time.monotonic() - began,
                                      send, pending, lost):
                self.lost += 1
                log.warning("%s: the lease on %s ran out before it finished; its result is dropped "
                            "(another worker runs it)", self.name, job.id)
        finally:
            for task in (*helpers, pumping):
                task.cancel()
            await asyncio.gather(*helpers, pumping, return_exceptions=True)
            engine.untrack(job.id)

    async def _finish(self, taken: Taken, kind: str, data: str, service_s: float, send, pending: list,
                      lost: asyncio.Event) -> bool:
        """Every event, then the result, to the front; while Redis is away, again until it is
        back (a result sent before all the text would show the person an answer with a hole in
        it). False when the lease was lost, or Redis stayed away past a few leases (the job then
        runs again elsewhere)."""
        deadline = time.monotonic() + max(30.0, 4 * self.lease_s)
        while not lost.is_set():
            await send()
            if not pending:
                try:
                    return await self.queue.finish(taken, kind, data, service_s)
                except Exception as e:
                    log.warning("%s: sending the result of %s failed (%s); trying again", self.name,
                                taken.entry.job_id, e)
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.5)
        return False


async def run_worker(settings: Settings, stop: asyncio.Event, name: str | None = None,
                     **engine_kw: Any) -> Worker:
    """`confab worker`: an engine on this host feeding from the Redis queue until `stop`."""
    if not settings.queue_url:
        raise ConfigError("confab worker needs the queue: --queue redis://HOST:6379/0 or CONFAB_QUEUE_URL.")
    queue = RedisQueue(settings.queue_url)
    # The front's store owns each job's record; a worker's engine keeps its scratch in SQLite.
    try:
        await queue.ping()
    except Exception as e:
        await queue.close()
        raise ConfigError(f"Cannot reach the queue at {settings.queue_url}: {e}") from None
    engine = Engine(settings.replace(database_url=""), **engine_kw)
    await engine.start(resume=False)
    worker = Worker(engine, queue, name)
    try:
        await worker.run(stop)
    finally:
        await engine.close()
        await queue.close()
    return worker
