"""The engine: accepts jobs (checks, stores, hands them out) and keeps their handles; where they run
is its dispatcher's: here (runtime/local.py: the scheduler, the memory manager, the native thread)
or on workers (scaleout/hosts.py: the Redis queue)."""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from typing import Any, Awaitable, Callable, Iterator, Protocol

from engine.config import Settings
from engine.errors import ConfabError, EngineBusy, JobCancelled, UnknownModel, UserError
from engine.jobs import JOB_TYPES, ChatMessage, ChatResult, Job, Origin, Token, Usage
from engine.priority import priority_class
from engine.runtime.handle import JobHandle
from engine.runtime.limits import Limits
from engine.runtime.local import LocalDispatcher
from engine.runtime.memory import ModelManager, Resident
from engine.runtime.metrics import Metrics
from engine.runtime.scheduler import Entry, Policy, Scheduler
from engine.storage.intake import CURRENT, Intake
from engine.storage.store import Store
from engine.wire import to_wire
from engine.work import registry as work
from models.catalog import BY_NAME
from models.registry import InstalledModel, Registry

log = logging.getLogger(__name__)

ResumeListener = Callable[[JobHandle, dict], Awaitable[None]]
REDELIVER_WITHIN_S = 3600.0    # a finished answer whose last edit a kill cut off is re-sent this long
# A live conversation's jobs are not run again by whichever process restarts first: the person
# is not waiting for those jobs but for their turn, which the voice loop asks again itself.
LIVE_PLATFORMS = ("voice",)
WHOLE_RESULT = "whole"        # key of a result record that keeps the result itself (wire form)


class Dispatcher(Protocol):
    """Where an engine's accepted jobs run: `LocalDispatcher` (here) or scale-out's
    `RedisDispatcher` (on workers). It reports each job's end back through the engine's
    `job_succeeded`, `job_failed` and `job_ended`."""

    policy: Policy

    async def start(self) -> None: ...
    async def close(self) -> None: ...

    def check_capacity(self, user: str, admitting: dict[str, int]) -> None:
        """Raise EngineBusy or UserQueueFull when the queue has no room for one more of `user`'s
        jobs (`admitting`: jobs per user being stored right now)."""

    def enqueue(self, handle: JobHandle) -> None:
        """Hand over a stored job (its handle is already the engine's)."""

    async def cancel(self, handle: JobHandle) -> bool: ...
    def position(self, job_id: str) -> tuple[int, float] | None: ...

    # what the doors show: the queue and the models of this process
    clock: Callable[[], float]
    concurrency: int
    waiting: list[Entry]
    running: list[Entry]
    budgets: dict[str, int]
    load_seconds: dict[str, float]

    def depth_by_class(self) -> dict[int, int]: ...
    def service_estimate(self, model: str) -> float: ...
    def resident(self) -> list[Resident]: ...
    def resident_names(self) -> list[str]: ...


class Engine:
    """`dispatcher(engine)` makes the part that runs its jobs (default: a LocalDispatcher,
    which `load`, `unload`, `clock` and `gpu_total` configure)."""

    def __init__(self, settings: Settings, registry: Registry | None = None,
                 load: Callable[[str, str], tuple[Any, int | None]] | None = None,
                 unload: Callable[[Any], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 gpu_total: int | None | bool = False,
                 dispatcher: Callable[[Engine], Dispatcher] | None = None):
        self.settings = settings
        work.load_modalities()
        self.registry = registry or Registry(settings.data_path, settings.models_path)
        self._installed: dict[str, InstalledModel] = {}
        self.refresh_models()
        self.policy = Policy(settings.aging_s, settings.class2_promote_s, settings.queue_max,
                             settings.user_queue_max)
        self.store = Store(settings.database_url or settings.data_path / "confab.db")
        self.metrics = Metrics()
        self.limits = Limits.from_settings(settings)
        self._handles: dict[str, JobHandle] = {}
        self._admitting: dict[str, int] = {}
        self._resume_listeners: dict[str, ResumeListener] = {}
        self._unclaimed: dict[str, list[tuple[JobHandle, dict]]] = {}   # resumed before a listener
        self._started = False
        local_parts = load or unload or gpu_total is not False or clock is not time.monotonic
        if dispatcher is not None and local_parts:
            raise TypeError("load, unload, clock and gpu_total configure the local dispatcher; "
                            "an engine given its own dispatcher takes none of them")
        self.dispatcher: Dispatcher = (dispatcher(self) if dispatcher is not None else
                                       LocalDispatcher(self, load, unload, clock, gpu_total))

    # The local dispatcher's parts, for a scale-out worker, tools and tests (an engine whose jobs
    # run on workers has none: its doors read `dispatcher`).

    @property
    def models(self) -> ModelManager:
        return self._local().models

    @property
    def scheduler(self) -> Scheduler:
        return self._local().scheduler

    def _local(self) -> LocalDispatcher:
        if not isinstance(self.dispatcher, LocalDispatcher):
            raise AttributeError("this engine's jobs run on workers: it has no models or scheduler of its own")
        return self.dispatcher

    # -- models ----------------------------------------------------------------------------

    def refresh_models(self) -> dict[str, InstalledModel]:
        installed = self.registry.installed()
        for name, (url, remote) in self.settings.remote_chat_models().items():
            installed[name] = InstalledModel(name, "chat", "remote-openai", url, 0, source=url,
                                             options={"remote_model": remote})
        self._installed = installed
        return self._installed

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

    def installed_model(self, name: str) -> InstalledModel | None:
        """The model called `name` as last listed (no new look at the models folder)."""
        return self._installed.get(name)

    def adapters_of(self, base: str) -> list[InstalledModel]:
        return sorted((m for m in self._installed.values() if m.parent == base), key=lambda m: m.name)

    # -- life cycle ------------------------------------------------------------------------

    async def start(self, resume: bool = True) -> None:
        if self._started:
            return
        self._started = True
        await self.dispatcher.start()
        await self.limits.refresh(self.store, every_s=0)   # today's GPU-seconds, from the store
        if resume:
            await self._resume_unfinished()

    async def close(self) -> None:
        for handle in list(self._handles.values()):
            handle.cancel_flag.set()
        await self.dispatcher.close()
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
            handle = self._enqueue(job, prio)
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
        self.dispatcher.check_capacity(user, self._admitting)
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

    def _enqueue(self, job: Job, prio: int) -> JobHandle:
        handle = JobHandle(job, prio, self._cancel)
        self._handles[job.id] = handle
        self.dispatcher.enqueue(handle)
        return handle

    def handle(self, job_id: str) -> JobHandle | None:
        return self._handles.get(job_id)

    async def cancel(self, job_id: str) -> bool:
        handle = self._handles.get(job_id)
        return await self._cancel(handle) if handle else False

    async def _cancel(self, handle: JobHandle) -> bool:
        return await self.dispatcher.cancel(handle)

    def position(self, job_id: str) -> tuple[int, float] | None:
        return self.dispatcher.position(job_id)

    def jobs_of(self, user_key: str) -> list[JobHandle]:
        return [h for h in self._handles.values() if not h.done and h.job.origin.user_key == user_key]

    def active_jobs(self) -> list[JobHandle]:
        return [h for h in self._handles.values() if not h.done]

    def track(self, job: Job, prio: int) -> JobHandle:
        """A handle for a job stored and queued elsewhere (a scale-out worker's), run with
        `dispatcher.run`; `untrack` it when it ends."""
        handle = JobHandle(job, prio, self._cancel)
        self._handles[job.id] = handle
        return handle

    def untrack(self, job_id: str) -> None:
        self._handles.pop(job_id, None)

    # -- a job's end (its dispatcher's word) ------------------------------------------------------

    async def job_succeeded(self, handle: JobHandle, result: Any) -> None:
        record = dataclasses.asdict(result) if dataclasses.is_dataclass(result) else None
        record = _jsonable(record)
        if handle.job.meta.get("endpoint") and isinstance(record, dict):
            # an asynchronous API job: its response is rendered later from the whole result,
            # bytes too (speech audio, embeddings); see bots/api/jobs.py
            record[WHOLE_RESULT] = to_wire(result)
        try:
            await self.store.set_status(handle.id, "done", result=record)
        finally:
            self.job_ended(handle, result=result)

    async def job_failed(self, handle: JobHandle, error: ConfabError) -> None:
        status = "cancelled" if isinstance(error, JobCancelled) else "failed"
        try:
            await self.store.set_status(handle.id, status, error=error.message)
        finally:
            self.job_ended(handle, error=error)

    def job_ended(self, handle: JobHandle, result: Any = None, error: ConfabError | None = None) -> None:
        """Resolve the handle (the store is the caller's: job_succeeded and job_failed write it)."""
        job = handle.job
        outcome = "ok" if error is None else error.code
        self.metrics.jobs.labels(job.kind, outcome).inc()
        self.metrics.latency.labels(job.kind).observe(max(0.0, time.time() - job.created_at))
        if error is None:
            handle.resolve(result)
        else:
            handle.fail(error)
        # keep finished handles briefly for /queue and the API; the store keeps them for good
        if len(self._handles) > 4 * self.policy.queue_max:
            for jid in [j for j, h in self._handles.items() if h.done][: len(self._handles) // 2]:
                self._handles.pop(jid, None)

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
