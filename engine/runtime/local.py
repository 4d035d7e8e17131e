"""Jobs run in this process: the scheduler picks the next one, the memory manager loads its model,
and its executor runs on the one native thread (in-process models) or on the loop (chat, in its
runner processes). The engine's dispatcher unless its jobs run on workers (engine/scaleout)."""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from engine.errors import (
    BackendFailed,
    ConfabError,
    EngineBusy,
    JobCancelled,
    JobTimeout,
    UserError,
    UserQueueFull,
)
from engine.jobs import ChatResult, Job, Queued, Started, Token
from engine.runtime.handle import JobHandle
from engine.runtime.memory import ModelManager, Resident, device_budgets
from engine.runtime.scheduler import Entry, Scheduler
from engine.work import chat
from engine.work import registry as work
from engine.work.chat_runner import RunnerGone
from models.devices import cuda_total_bytes

log = logging.getLogger(__name__)


class LocalDispatcher:
    """Runs the jobs of `engine` (an Engine) here. `load` and `unload` replace the model
    loaders (tests), `gpu_total` the measured GPU memory (None: no GPU)."""

    def __init__(self, engine, load: Callable[[str, str], tuple[Any, int | None]] | None = None,
                 unload: Callable[[Any], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 gpu_total: int | None | bool = False):
        self.engine = engine
        settings = engine.settings
        if gpu_total is False:
            gpu_total = cuda_total_bytes()
        self.budgets = device_budgets(gpu_total or None, settings.device, settings.gpu_budget_mb,
                                      settings.cpu_budget_mb)
        # Every in-process model's native calls (loads, inference, unloads) run on this one
        # thread: two threads each with an OpenMP team of all cores make libgomp stop
        # spinning at barriers, and every later job runs at half speed. Chat runs in its
        # runner processes, beside it.
        self._native = ThreadPoolExecutor(max_workers=1, thread_name_prefix="confab-native")
        self.models = ModelManager(load or self.load_model, unload or work.unload,
                                   self._size_of, self.budgets, settings.keep_alive_s,
                                   settings.pinned_models, clock, executor=self._native,
                                   library_of=self._library_of)
        self.scheduler = Scheduler(self.run, self.models.resident_names, clock, engine.policy,
                                   concurrency=1, slots=self.slots_of)
        self.policy = engine.policy

    # -- models ----------------------------------------------------------------------------

    def slots_of(self, name: str) -> int:
        """Jobs a model takes at once: a loaded chat runner's slots; one for the others (and
        for a chat model until it is loaded: the first job loads it, then the rest fill it)."""
        instance = self.models.instance_of(name)
        slots = getattr(instance, "slots", None)
        return len(slots) if isinstance(slots, list) else 1

    def _size_of(self, name: str) -> int:
        model = self.engine.installed_model(name)
        if model is None:
            return 2**30
        if model.fmt in ("gguf", "llava-gguf"):
            try:
                meta = chat.gguf_metadata(model)
            except ConfabError:
                return model.size
            device = next(iter(self.budgets))
            # a runner holds every adapter of its model (each file once) beside the weights
            adapters = {m.path: m.size for m in self.engine.adapters_of(name)}
            settings = self.engine.settings
            return (chat.runner_size(model, meta, settings, chat.chat_slots(settings, device))
                    + sum(adapters.values()))
        return model.size

    def _library_of(self, name: str) -> str:
        model = self.engine.installed_model(name)
        return work.LIBRARIES.get(model.fmt, "") if model else ""

    def load_model(self, name: str, device: str) -> tuple[Any, int | None]:
        """The model loader (what a test's `load` wraps): checksums, adapters, then the load."""
        engine = self.engine
        model = engine.installed_model(name)
        if model is None:
            raise KeyError(name)
        adapters = engine.adapters_of(name) if model.fmt == "gguf" else []
        for m in [model, *adapters]:
            problems = engine.registry.verify(m)
            if problems:
                raise BackendFailed(f"The model '{m.name}' failed its checksum: {'; '.join(problems)}. "
                                    f"Reinstall it or run `confab models verify`.")
        if adapters:   # its runner starts with them all loaded, none applied (see chat.load_gguf)
            model = dataclasses.replace(model, options={**model.options, "adapters": [
                {"name": m.name, "path": m.path, "size": m.size} for m in adapters]})
        engine.metrics.loads.labels(name).inc()
        return work.load_measured(model, device, engine.settings, room=self.models.room(device))

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self.scheduler.start()
        self.models.start()

    async def close(self) -> None:
        await self.scheduler.stop()
        await self.models.close()
        # the native thread stops at its next token or step; wait for it
        await asyncio.to_thread(self._native.shutdown, wait=True, cancel_futures=True)

    # -- the engine's jobs -------------------------------------------------------------------

    def check_capacity(self, user: str, admitting: dict[str, int]) -> None:
        policy, metrics = self.policy, self.engine.metrics
        waiting = self.scheduler.waiting
        if len(waiting) + sum(admitting.values()) >= policy.queue_max:
            metrics.rejected.labels("queue_full").inc()
            raise EngineBusy(f"The queue is full ({policy.queue_max} jobs waiting). Please try "
                             "again shortly.", retry_after=self.scheduler.retry_after())
        mine = sum(1 for e in waiting if e.user == user) + admitting.get(user, 0)
        if mine >= policy.user_queue_max:
            metrics.rejected.labels("user_queue_full").inc()
            raise UserQueueFull(f"You already have {mine} jobs waiting; the limit is "
                                f"{policy.user_queue_max}. Wait for one to finish or cancel one.",
                                retry_after=self.scheduler.retry_after(user))

    def enqueue(self, handle: JobHandle) -> None:
        job = handle.job
        entry = Entry(job.id, handle.priority, self.engine.base_of(job.model), job.origin.user_key,
                      self.scheduler.clock(), payload=job)
        self.scheduler.submit(entry, force=True)
        self._update_depth()
        where = self.scheduler.position(job.id)
        if where:
            handle.push(Queued(*where))

    async def cancel(self, handle: JobHandle) -> bool:
        if handle.done or handle.status == "finishing":
            return False
        if self.scheduler.cancel_queued(handle.id):
            self.engine.job_ended(handle, error=JobCancelled())
            await self.engine.store.set_status(handle.id, "cancelled")
            self._update_depth()
            return True
        handle.cancel_flag.set()   # the worker stops at its next token or step
        return True

    def position(self, job_id: str) -> tuple[int, float] | None:
        return self.scheduler.position(job_id)

    # -- what people see (the same on every dispatcher) --------------------------------------

    @property
    def clock(self) -> Callable[[], float]:
        return self.scheduler.clock

    @property
    def concurrency(self) -> int:
        return self.scheduler.concurrency

    @property
    def waiting(self) -> list[Entry]:
        return self.scheduler.waiting

    @property
    def running(self) -> list[Entry]:
        return self.scheduler.running

    def depth_by_class(self) -> dict[int, int]:
        return self.scheduler.depth_by_class()

    def service_estimate(self, model: str) -> float:
        return self.scheduler.service_estimate(model)

    def resident(self) -> list[Resident]:
        return self.models.snapshot()

    def resident_names(self) -> list[str]:
        return self.models.resident_names()

    @property
    def load_seconds(self) -> dict[str, float]:
        return self.models.load_seconds

    # -- running ------------------------------------------------------------------------------

    async def run(self, entry: Entry) -> None:
        """Run the job of `entry` (its handle is the engine's) to its end: the scheduler's
        dispatch, and a scale-out worker's for each job it takes."""
        engine = self.engine
        handle = engine.handle(entry.job_id)
        if handle is None or handle.done:
            return
        job = handle.job
        self._update_depth()
        engine.metrics.wait.labels(job.kind, str(entry.cls)).observe(self.scheduler.clock() - entry.arrived)
        try:
            instance, device = await self.models.acquire(entry.model)
            adapter = engine.installed_model(job.model)
            if adapter is not None and adapter.parent and not chat.holds_adapter(instance, adapter):
                instance, device = await self._restart_with(entry.model, handle)
        except ConfabError as e:
            return await engine.job_failed(handle, e)
        except Exception as e:
            log.exception("loading %s failed", job.model)
            return await engine.job_failed(handle, BackendFailed(f"Loading the model '{job.model}' failed: {e}"))
        self.scheduler.poke()   # a runner just loaded may take more jobs than the one that loaded it
        started = None
        try:
            handle.status, handle.device = "running", device
            handle.push(Started(job.model, device))
            engine.metrics.running.inc()
            await engine.store.set_status(job.id, "running")
            started = time.monotonic()
            timeout = job.timeout_s or engine.settings.job_timeout_s
            try:
                result = await self._execute(handle, instance, device, timeout)
            except RunnerGone as e:
                # a runner that died is restarted and the job tried once more, unless part of
                # its answer was already shown (a second answer would not match it)
                if handle.streamed:
                    await self.models.discard(entry.model, instance)
                    raise BackendFailed(f"The chat model '{job.model}' stopped answering in the "
                                        "middle of its answer (its process ended). It is started "
                                        "again for the next question: please ask again.") from None
                if not await self.models.discard(entry.model, instance):
                    raise
                log.warning("the runner of %s died (%s); restarting it for %s", entry.model, e, job.id)
                self.models.release(entry.model)
                instance, device = await self.models.acquire(entry.model)
                result = await self._execute(handle, instance, device, timeout)
            if handle.cancel_flag.is_set():
                return await engine.job_failed(handle, JobCancelled())
            handle.status = "finishing"   # too late to cancel: cancel() now says so
            self._observe(job, result, time.monotonic() - started)
            await engine.job_succeeded(handle, result)
        except ConfabError as e:
            await engine.job_failed(handle, e)
        except ValueError as e:
            await engine.job_failed(handle, UserError(str(e)))
        except Exception as e:
            log.exception("job %s failed", job.id)
            await engine.job_failed(handle, BackendFailed(f"The model '{job.model}' failed: {e}"))
        finally:
            if started is not None:   # the daily GPU-seconds budget counts run time, whatever the outcome
                engine.limits.charge(job.origin, time.monotonic() - started)
            engine.metrics.running.dec()
            self.models.release(entry.model)
            self._update_memory()

    async def _restart_with(self, base: str, handle: JobHandle) -> tuple[Any, str]:
        """A base model's runner loaded before one of its adapters was added: restart it (when
        its running jobs are done) with them all. Holds the acquire it returns."""
        self.models.release(base)
        timeout = handle.job.timeout_s or self.engine.settings.job_timeout_s
        deadline = time.monotonic() + timeout
        while self.models.instance_of(base) is not None and not await self.models.unload(base):
            if handle.cancel_flag.is_set():
                raise JobCancelled()
            if time.monotonic() > deadline:
                raise JobTimeout(timeout)
            await asyncio.sleep(0.1)
        log.info("restarted %s to load the adapter %s", base, handle.job.model)
        return await self.models.acquire(base)

    async def _execute(self, handle: JobHandle, instance: Any, device: str, timeout: float) -> Any:
        """Run the job's executor: a runner's on the loop, the others on the native thread."""
        job = handle.job
        executor = work.EXECUTORS[job.kind]
        loop = asyncio.get_running_loop()
        model = self.engine.installed_model(job.model)
        adapter = model if model is not None and model.parent else None
        settings = self.engine.settings

        def emit(event: object) -> None:
            if isinstance(event, Token):
                handle.streamed = True
            handle.push(event)

        if job.kind in work.ON_LOOP:
            ctx = work.RunContext(emit=emit, cancelled=handle.cancel_flag.is_set, device=device,
                                  settings=settings, adapter=adapter)
            running = asyncio.ensure_future(executor(instance, job, ctx))
        else:
            ctx = work.RunContext(emit=lambda ev: loop.call_soon_threadsafe(emit, ev),
                                  cancelled=handle.cancel_flag.is_set, device=device,
                                  settings=settings, adapter=adapter)
            running = loop.run_in_executor(self._native, executor, instance, job, ctx)
        try:
            return await asyncio.wait_for(asyncio.shield(running), timeout)
        except asyncio.TimeoutError:
            handle.cancel_flag.set()
            await asyncio.wait([running])   # the model is not free until the work stops
            raise JobTimeout(timeout) from None

    def _observe(self, job: Job, result: Any, seconds: float) -> None:
        metrics = self.engine.metrics
        if isinstance(result, ChatResult) and seconds > 0:
            metrics.tokens.labels(job.model).inc(result.usage.completion_tokens)
            metrics.tokens_per_s.labels(job.model).set(result.usage.completion_tokens / seconds)

    def _update_depth(self) -> None:
        for cls, n in self.scheduler.depth_by_class().items():
            self.engine.metrics.queue_depth.labels(str(cls)).set(n)

    def _update_memory(self) -> None:
        metrics = self.engine.metrics
        metrics.evictions.set(self.models.evictions)
        metrics.resident.clear()
        for r in self.models.snapshot():
            metrics.resident.labels(r.name, r.device).set(r.size)
