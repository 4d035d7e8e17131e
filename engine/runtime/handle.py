"""What `submit` returns: await the result, iterate the streamed events, or cancel."""
from __future__ import annotations

import asyncio
import threading
from typing import Any, AsyncIterator, Awaitable, Callable

from engine.errors import ConfabError, JobCancelled
from engine.jobs import Job

_END = object()


class JobHandle:
    def __init__(self, job: Job, priority: int, cancel: Callable[["JobHandle"], Awaitable[bool]]):
        self.job = job
        self.id = job.id
        self.priority = priority
        self.status = "queued"          # queued, running, finishing, done, failed, cancelled
        self.device: str | None = None
        self.streamed = False           # part of the answer has reached the caller
        self.cancel_flag = threading.Event()   # read by the worker thread between tokens
        self._cancel = cancel
        self._events: asyncio.Queue = asyncio.Queue()
        self._result: asyncio.Future = asyncio.get_running_loop().create_future()
        self._result.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)

    # -- the engine's side ------------------------------------------------------------------

    def push(self, event: object) -> None:
        self._events.put_nowait(event)

    def resolve(self, result: Any) -> None:
        if not self._result.done():
            self.status = "done"
            self._result.set_result(result)
            self._events.put_nowait(_END)

    def fail(self, error: BaseException) -> None:
        if not self._result.done():
            self.status = "cancelled" if isinstance(error, JobCancelled) else "failed"
            self._result.set_exception(error)
            self._events.put_nowait(_END)

    # -- the caller's side --------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self._result.done()

    async def result(self) -> Any:
        return await asyncio.shield(self._result)

    async def events(self) -> AsyncIterator[object]:
        """Every event until the job ends; then the result is ready (or its error raised)."""
        while True:
            event = await self._events.get()
            if event is _END:
                return
            yield event

    def __aiter__(self) -> AsyncIterator[object]:
        return self.events()

    async def cancel(self) -> bool:
        return await self._cancel(self)

    async def ended(self, timeout: float | None = None) -> bool:
        """Wait until the job has ended, whatever its outcome (True), or `timeout` passed."""
        done, _ = await asyncio.wait([self._result], timeout=timeout)
        return bool(done)

    def error(self) -> ConfabError | None:
        if self._result.done() and not self._result.cancelled():
            exc = self._result.exception()
            return exc if isinstance(exc, ConfabError) else None
        return None
