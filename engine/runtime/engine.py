"""The engine: one queue, one owner of models, one thread for in-process models' native calls (chat
runs in its runner processes)."""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable, Iterator

from engine.config import Settings
from engine.errors import (
    BackendFailed,
    ConfabError,
    EngineBusy,
    JobCancelled,
    JobTimeout,
    UnknownModel,
    UserError,
    UserQueueFull,
)
from engine.jobs import JOB_TYPES, ChatMessage, ChatResult, Job, Origin, Queued, Started, Token, Usage
from engine.priority import priority_class
from engine.runtime.handle import JobHandle
from engine.runtime.limits import Limits
from engine.runtime.memory import ModelManager, device_budgets
from engine.runtime.metrics import Metrics
from engine.runtime.scheduler import Entry, Policy, Scheduler
from engine.storage.intake import CURRENT, Intake
from engine.storage.store import Store
from engine.wire import to_wire
from engine.work import chat
from engine.work import registry as work
from engine.work.chat_runner import RunnerGone
from models.catalog import BY_NAME
from models.devices import cuda_total_bytes
from models.registry import InstalledModel, Registry

log = logging.getLogger(__name__)

ResumeListener = Callable[[JobHandle, dict], Awaitable[None]]
REDELIVER_WITHIN_S = 3600.0
# A live conversation's jobs are not run again by whichever process restarts first: the person
# is not waiting for those jobs but for their turn, which the voice loop asks again itself.
LIVE_PLATFORMS = ("voice",)
WHOLE_RESULT = "whole"        # key of a result record that keeps the result itself (wire form)   # a finished answer whose last edit a kill cut off is re-sent this long


class Engine:
    def __init__(self, settings: Settings, registry: Registry | None = None,
                 load: Callable[[str, str], tuple[Any, int | None]] | None = None,
                 unload: Callable[[Any], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 gpu_total: int | None | bool = False):
        self.settings = settings
        work.load_modalities()
        self.registry = registry or Registry(settings.data_path, settings.models_path)
        self._installed: dict[str, InstalledModel] = {}
        self.refresh_models()
        if gpu_total is False:
            gpu_total = cuda_total_bytes()
        self.budgets = device_budgets(gpu_total or None, settings.device, settings.gpu_budget_mb,
                                      settings.cpu_budget_mb)
        # Every in-process model's native calls (loads, inference, unloads) run on this one
        # thread: two threads each with an OpenMP team of all cores make libgomp stop
        # spinning at barriers, and every later job runs at half speed. Chat runs in its
        # runner processes, beside it.
        self._native = ThreadPoolExecutor(max_workers=1, thread_name_prefix="confab-native")
        self.models = ModelManager(load or self._load_model, unload or work.unload,
                                   self._size_of, self.budgets, settings.keep_alive_s,
                                   settings.pinned_models, clock, executor=self._native,
                                   library_of=self._library_of)
        self.scheduler = Scheduler(self._dispatch, self.models.resident_names, clock,
                                   Policy(settings.aging_s, settings.class2_promote_s,
                                          settings.queue_max, settings.user_queue_max),
                                   concurrency=1, slots=self.slots_of)
        self.store = Store(settings.database_url or settings.data_path / "confab.db")
        self.metrics = Metrics()
        self.limits = Limits.from_settings(settings)
        self._handles: dict[str, JobHandle] = {}
        self._admitting: dict[str, int] = {}
        self._resume_listeners: dict[str, ResumeListener] = {}
        self._unclaimed: dict[str, list[tuple[JobHandle, dict]]] = {}   # resumed before a listener
        self._started = False

    # -- models ----------------------------------------------------------------------------

    def refresh_models(self) -> dict[str, InstalledModel]:
        installed = self.registry.installed()
        for name, (url, remote) in self.settings.remote_chat_models().items():
            installed[name] = InstalledModel(name, "chat", "remote-openai", url, 0, source=url,
                                             options={"remote_model": remote})
        self._installed = installed
        return self._installed

    def slots_of(self, name: str) -> int:
        """Jobs a model takes at once: a loaded chat runner's slots; one for the others (and
        for a chat model until it is loaded: the first job loads it, then the rest fill it)."""
        instance = self.models.instance_of(name)
        slots = getattr(instance, "slots", None)
        return len(slots) if isinstance(slots, list) else 1

    def installed(self, kind: str | None = None) -> list[InstalledModel]:
        return [m for m in self._installed.values() if kind is None or m.kind == kind]

    def resolve_model(self, name: str | None, kind: str) -> InstalledModel:
        if name:
            model = self._installed.get(name) or self.refresh_models().get(name)
            if model is None or model.kind != kind:
                raise UnknownModel(name, kind, [m.name for m in self.installed(kind)])
            return model
        preferred = {"chat": self.settings.default_chat_model, "stt": self.settings.default_stt_model,
                     "tts": self.settings.default_tts_model}.get(kind)
        if preferred:
            return self.resolve_model(preferred, kind)
        candidates = self.installed(kind)
        if not candidates:
            self.refresh_models()
            candidates = self.installed(kind)
        if not candidates:
            raise UnknownModel(f"(default {kind} model)", kind, [])
        candidates.sort(key=lambda m: (not (BY_NAME.get(m.name) and BY_NAME[m.name].default), m.name))
        return candidates[0]

    def base_of(self, name: str) -> str:
        """The model a job for `name` runs on: an adapter's base, else the model itself (the
        scheduler's and the memory manager's key)."""
        model = self._installed.get(name) or self.refresh_models().get(name)   # added since
        return model.parent if model is not None and model.parent else name

    def adapters_of(self, base: str) -> list[InstalledModel]:
        return sorted((m for m in self._installed.values() if m.parent == base), key=lambda m: m.name)

    def _size_of(self, name: str) -> int:
        model = self._installed.get(name)
        if model is None:
            return 2**30
        if model.fmt in ("gguf", "llava-gguf"):
            try:
                meta = chat.gguf_metadata(model)
            except ConfabError:
                return model.size
            device = next(iter(self.budgets))
            # a runner holds every adapter of its model (each file once) beside the weights
            adapters = {m.path: m.size for m in self.adapters_of(name)}
            return (chat.runner_size(model, meta, self.settings, chat.chat_slots(self.settings, device))
                    + sum(adapters.values()))
        return model.size

    def _library_of(self, name: str) -> str:
        model = self._installed.get(name)
        return work.LIBRARIES.get(model.fmt, "") if model else ""

    def _load_model(self, name: str, device: str) -> tuple[Any, int | None]:
        model = self._installed[name]
        adapters = self.adapters_of(name) if model.fmt == "gguf" else []
        for m in [model, *adapters]:
            problems = self.registry.verify(m)
            if problems:
                raise BackendFailed(f"The model '{m.name}' failed its checksum: {'; '.join(problems)}. "
                                    f"Reinstall it or run `confab models verify`.")
        if adapters:   # its runner starts with them all loaded, none applied (see chat.load_gguf)
            model = dataclasses.replace(model, options={**model.options, "adapters": [
                {"name": m.name, "path": m.path, "size": m.size} for m in adapters]})
        self.metrics.loads.labels(name).inc()
        return work.load_measured(model, device, self.settings, room=self.models.room(device))

    # -- life cycle ------------------------------------------------------------------------

    async def start(self, resume: bool = True) -> None:
        if self._started:
            return
        self._started = True
        self.scheduler.start()
        self.models.start()
        await self.limits.refresh(self.store, every_s=0)   # today's GPU-seconds, from the store
        if resume:
            await self._resume_unfinished()

    async def close(self) -> None:
        for handle in list(self._handles.values()):
            handle.cancel_flag.set()
        await self.scheduler.stop()
        await self.models.close()
        # the native thread stops at its next token or step; wait for it
        await asyncio.to_thread(self._native.shutdown, wait=True, cancel_futures=True)
        self.store.close()

    def on_resume(self, platform: str, listener: ResumeListener) -> None:
        """`listener(handle, reply_ref)` is called for each of the platform's jobs that were
        accepted before a restart and run again now (also those resumed before it registered)."""
        self._resume_listeners[platform] = listener
        for handle, ref in self._unclaimed.pop(platform, []):
            asyncio.get_running_loop().create_task(listener(handle, ref))

    async def _resume_unfinished(self) -> None:
        for record, prio, reply_ref in await self.store.unfinished_jobs():
            cls = JOB_TYPES.get(record.get("kind"))
            if cls is None or (record.get("origin") or {}).get("platform") in LIVE_PLATFORMS:
                continue
            job = job_from_record(cls, record)
            handle = self._enqueue(job, prio, force=True)
            log.info("resuming %s (%s) accepted before the restart", job.id, job.kind)
            listener = self._resume_listeners.get(job.origin.platform)
            if listener:
                asyncio.create_task(listener(handle, {"reply_ref": reply_ref}))
            else:   # its adapter starts after the engine: hand the job over when it registers
                self._unclaimed.setdefault(job.origin.platform, []).append((handle, {"reply_ref": reply_ref}))
        await self._redeliver(time.time() - REDELIVER_WITHIN_S)

    async def _redeliver(self, since: float) -> None:
        """Jobs that finished but whose answer's last edit never reached the platform (a kill
        landed in between) are handed to their adapter again, done, with the whole text."""
        for record, prio, reply_ref, result in await self.store.undelivered_jobs(since):
            cls = JOB_TYPES.get(record.get("kind"))
            value = result_from_record(result)
            if cls is None or value is None:
                continue
            handle = JobHandle(job_from_record(cls, record), prio, self._cancel)
            handle.push(Token(value.text))
            handle.resolve(value)
            log.info("delivering the answer of %s again: it finished before the restart", handle.id)
            listener = self._resume_listeners.get(handle.job.origin.platform)
            if listener:
                asyncio.create_task(listener(handle, {"reply_ref": reply_ref}))
            else:
                self._unclaimed.setdefault(handle.job.origin.platform, []).append((handle, {"reply_ref": reply_ref}))

    # -- jobs --------------------------------------------------------------------------------

    async def submit(self, job: Job) -> JobHandle:
        """Accept a job: check it, write it to the store, then queue it."""
        model_kind = work.JOB_KIND_TO_MODEL_KIND.get(job.kind)
        if model_kind is None:
            raise UserError(f"Confab cannot run '{job.kind}' jobs.")
        job.model = self.resolve_model(job.model, model_kind).name
        prio = job.priority if job.priority is not None else priority_class(job.origin, self.settings.admins)
        user = job.origin.user_key
        try:
            await self.limits.refresh(self.store)
            self.limits.check(job.origin)
        except EngineBusy as e:
            self.metrics.rejected.labels(e.code).inc()
            await self.store.audit(user, f"refused:{job.kind}", {"model": job.model, "reason": e.code})
            raise
        self._check_capacity(user)
        self._admitting[user] = self._admitting.get(user, 0) + 1
        intake = CURRENT.get()
        try:
            await self.store.add_job(job.to_record(), prio,
                                     audit=(user, f"submit:{job.kind}", {"job": job.id, "model": job.model}),
                                     reply_ref=json.dumps(intake.where) if intake and intake.where else None,
                                     event=intake.event if intake and intake.by_job and not intake.closed else None)
            if intake is not None and intake.by_job:
                intake.closed = True
        finally:
            self._admitting[user] -= 1
            if not self._admitting[user]:
                del self._admitting[user]
        return self._enqueue(job, prio)

    # -- platform events (engine/storage/intake.py) ------------------------------------------------------

    async def accept(self, platform: str, event_id: str, payload: dict) -> bool:
        """Keep an event before acknowledging it; False when it was kept before (answer it once)."""
        return await self.store.add_event(event_id, platform, payload)

    @contextlib.contextmanager
    def answering(self, event_id: str, where: dict | None = None, by_job: bool = True) -> Iterator[Intake]:
        """Jobs submitted inside carry `where` their answer goes; the first closes the event
        (unless `by_job` is False: then only `settle` does)."""
        intake = Intake(event_id, dict(where or {}), by_job=by_job)
        token = CURRENT.set(intake)
        try:
            yield intake
        finally:
            CURRENT.reset(token)

    async def settle(self, intake: Intake | str) -> None:
        """The event was answered without a job (or its answer failed): do not answer it again."""
        if isinstance(intake, str):
            intake = Intake(intake)
        if not intake.closed:
            intake.closed = True
            await self.store.close_event(intake.event)

    async def open_events(self, platform: str, before: float) -> list[tuple[str, dict]]:
        """Events kept before `before` (when this process began to listen: the ones after it are
        its own, being answered) that no job took up."""
        return await self.store.open_events(platform, before)

    def _check_capacity(self, user: str) -> None:
        policy = self.scheduler.policy
        waiting = self.scheduler.waiting
        admitting = sum(self._admitting.values())
        if len(waiting) + admitting >= policy.queue_max:
            self.metrics.rejected.labels("queue_full").inc()
            raise EngineBusy(f"The queue is full ({policy.queue_max} jobs waiting). Please try "
                             "again shortly.", retry_after=self.scheduler.retry_after())
        mine = sum(1 for e in waiting if e.user == user) + self._admitting.get(user, 0)
        if mine >= policy.user_queue_max:
            self.metrics.rejected.labels("user_queue_full").inc()
            raise UserQueueFull(f"You already have {mine} jobs waiting; the limit is "
                                f"{policy.user_queue_max}. Wait for one to finish or cancel one.",
                                retry_after=self.scheduler.retry_after(user))

    def _enqueue(self, job: Job, prio: int, force: bool = False) -> JobHandle:
        handle = JobHandle(job, prio, self._cancel)
        self._handles[job.id] = handle
        entry = Entry(job.id, prio, self.base_of(job.model), job.origin.user_key,
                      self.scheduler.clock(), payload=job)
        self.scheduler.submit(entry, force=True)
        self._update_depth()
        where = self.scheduler.position(job.id)
        if where:
            handle.push(Queued(*where))
        return handle

    def handle(self, job_id: str) -> JobHandle | None:
        return self._handles.get(job_id)

    async def cancel(self, job_id: str) -> bool:
        handle = self._handles.get(job_id)
        return await self._cancel(handle) if handle else False

    async def _cancel(self, handle: JobHandle) -> bool:
        if handle.done or handle.status == "finishing":
            return False
        if self.scheduler.cancel_queued(handle.id):
            self._finish(handle, error=JobCancelled())
            await self.store.set_status(handle.id, "cancelled")
            self._update_depth()
            return True
        handle.cancel_flag.set()   # the worker stops at its next token or step
        return True

    def position(self, job_id: str) -> tuple[int, float] | None:
        return self.scheduler.position(job_id)

    def jobs_of(self, user_key: str) -> list[JobHandle]:
        return [h for h in self._handles.values() if not h.done and h.job.origin.user_key == user_key]

    def active_jobs(self) -> list[JobHandle]:
        return [h for h in self._handles.values() if not h.done]

    # -- running ------------------------------------------------------------------------------

    async def _dispatch(self, entry: Entry) -> None:
        handle = self._handles.get(entry.job_id)
        if handle is None or handle.done:
            return
        job = handle.job
        self._update_depth()
        self.metrics.wait.labels(job.kind, str(entry.cls)).observe(self.scheduler.clock() - entry.arrived)
        try:
            instance, device = await self.models.acquire(entry.model)
            adapter = self._installed.get(job.model)
            if adapter is not None and adapter.parent and not chat.holds_adapter(instance, adapter):
                instance, device = await self._restart_with(entry.model, handle)
        except ConfabError as e:
            return await self._fail(handle, e)
        except Exception as e:
            log.exception("loading %s failed", job.model)
            return await self._fail(handle, BackendFailed(f"Loading the model '{job.model}' failed: {e}"))
        self.scheduler.poke()   # a runner just loaded may take more jobs than the one that loaded it
        started = None
        try:
            handle.status, handle.device = "running", device
            handle.push(Started(job.model, device))
            self.metrics.running.inc()
            await self.store.set_status(job.id, "running")
            started = time.monotonic()
            timeout = job.timeout_s or self.settings.job_timeout_s
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
                return await self._fail(handle, JobCancelled())
            handle.status = "finishing"   # too late to cancel: cancel() now says so
            self._observe(job, result, time.monotonic() - started)
            await self._succeed(handle, result)
        except ConfabError as e:
            await self._fail(handle, e)
        except ValueError as e:
            await self._fail(handle, UserError(str(e)))
        except Exception as e:
            log.exception("job %s failed", job.id)
            await self._fail(handle, BackendFailed(f"The model '{job.model}' failed: {e}"))
        finally:
            if started is not None:   # the daily GPU-seconds budget counts run time, whatever the outcome
                self.limits.charge(job.origin, time.monotonic() - started)
            self.metrics.running.dec()
            self.models.release(entry.model)
            self._update_memory()

    async def _restart_with(self, base: str, handle: JobHandle) -> tuple[Any, str]:
        """A base model's runner loaded before one of its adapters was added: restart it (when
        its running jobs are done) with them all. Holds the acquire it returns."""
        self.models.release(base)
        deadline = time.monotonic() + (handle.job.timeout_s or self.settings.job_timeout_s)
        while self.models.instance_of(base) is not None and not await self.models.unload(base):
            if handle.cancel_flag.is_set():
                raise JobCancelled()
            if time.monotonic() > deadline:
                raise JobTimeout(handle.job.timeout_s or self.settings.job_timeout_s)
            await asyncio.sleep(0.1)
        log.info("restarted %s to load the adapter %s", base, handle.job.model)
        return await self.models.acquire(base)

    async def _execute(self, handle: JobHandle, instance: Any, device: str, timeout: float) -> Any:
        """Run the job's executor: a runner's on the loop, the others on the native thread."""
        job = handle.job
        executor = work.EXECUTORS[job.kind]
        loop = asyncio.get_running_loop()
        model = self._installed.get(job.model)
        adapter = model if model is not None and model.parent else None

        def emit(event: object) -> None:
            if isinstance(event, Token):
                handle.streamed = True
            handle.push(event)

        if job.kind in work.ON_LOOP:
            ctx = work.RunContext(emit=emit, cancelled=handle.cancel_flag.is_set, device=device,
                                  settings=self.settings, adapter=adapter)
            running = asyncio.ensure_future(executor(instance, job, ctx))
        else:
            ctx = work.RunContext(emit=lambda ev: loop.call_soon_threadsafe(emit, ev),
                                  cancelled=handle.cancel_flag.is_set, device=device,
                                  settings=self.settings, adapter=adapter)
            running = loop.run_in_executor(self._native, executor, instance, job, ctx)
        try:
            return await asyncio.wait_for(asyncio.shield(running), timeout)
        except asyncio.TimeoutError:
            handle.cancel_flag.set()
            await asyncio.wait([running])   # the model is not free until the work stops
            raise JobTimeout(timeout) from None

    def _observe(self, job: Job, result: Any, seconds: float) -> None:
        if isinstance(result, ChatResult) and seconds > 0:
            self.metrics.tokens.labels(job.model).inc(result.usage.completion_tokens)
            self.metrics.tokens_per_s.labels(job.model).set(result.usage.completion_tokens / seconds)

    async def _succeed(self, handle: JobHandle, result: Any) -> None:
        record = dataclasses.asdict(result) if dataclasses.is_dataclass(result) else None
        record = _jsonable(record)
        if handle.job.meta.get("endpoint") and isinstance(record, dict):
            # an asynchronous API job: its response is rendered later from the whole result,
            # bytes too (speech audio, embeddings); see bots/api/jobs.py
            record[WHOLE_RESULT] = to_wire(result)
        try:
            await self.store.set_status(handle.id, "done", result=record)
        finally:
            self._finish(handle, result=result)

    async def _fail(self, handle: JobHandle, error: ConfabError) -> None:
        status = "cancelled" if isinstance(error, JobCancelled) else "failed"
        try:
            await self.store.set_status(handle.id, status, error=error.message)
        finally:
            self._finish(handle, error=error)

    def _finish(self, handle: JobHandle, result: Any = None, error: ConfabError | None = None) -> None:
        job = handle.job
        outcome = "ok" if error is None else error.code
        self.metrics.jobs.labels(job.kind, outcome).inc()
        self.metrics.latency.labels(job.kind).observe(max(0.0, time.time() - job.created_at))
        if error is None:
            handle.resolve(result)
        else:
            handle.fail(error)
        # keep finished handles briefly for /queue and the API; the store keeps them for good
        if len(self._handles) > 4 * self.scheduler.policy.queue_max:
            for jid in [j for j, h in self._handles.items() if h.done][: len(self._handles) // 2]:
                self._handles.pop(jid, None)

    def _update_depth(self) -> None:
        for cls, n in self.scheduler.depth_by_class().items():
            self.metrics.queue_depth.labels(str(cls)).set(n)

    def _update_memory(self) -> None:
        self.metrics.evictions.set(self.models.evictions)
        self.metrics.resident.clear()
        for r in self.models.snapshot():
            self.metrics.resident.labels(r.name, r.device).set(r.size)

    # -- conversations ------------------------------------------------------------------------

    async def remember(self, conversation: str, role: str, content: str) -> None:
        await self.store.append_message(conversation, role, content)

    async def remember_exchange(self, conversation: str, question: str, answer: str) -> None:
        """A question and its answer, written together."""
        await self.store.append_messages(conversation, [("user", question), ("assistant", answer)])

    async def history(self, conversation: str, limit: int | None = None) -> list[tuple[str, str]]:
        return await self.store.history(conversation, limit or self.settings.history_messages)


def _jsonable(value):
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": len(value)}
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def result_from_record(record: dict | None) -> ChatResult | None:
    """A chat result as the store keeps it, rebuilt (None for other results)."""
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        return None
    usage = record.get("usage") or {}
    return ChatResult(record["text"], record.get("finish_reason", "stop"),
                      Usage(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)),
                      record.get("model", ""), record.get("trimmed_messages", 0),
                      record.get("tool_calls") or [], record.get("logprobs"))


def job_from_record(cls: type[Job], record: dict) -> Job:
    """Rebuild a job from its stored record (nested dataclasses included). A job type with
    nested records of its own rebuilds itself with a `from_record` classmethod."""
    if hasattr(cls, "from_record"):
        return cls.from_record(record)
    fields = {f.name for f in dataclasses.fields(cls)}
    data = {k: v for k, v in record.items() if k in fields}
    data["origin"] = Origin(**data.get("origin", {}))
    if "messages" in data:
        data["messages"] = [ChatMessage(**m) for m in data["messages"]]
    return cls(**data)
