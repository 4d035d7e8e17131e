"""A loopback fake in a process and event loop of its own, driven over a pipe, for the adapter
benchmarks: the fake plays Slack or Discord, so its CPU time must not be counted as Confab's.

The child builds the fake, starts it, sends back what Confab needs to reach it (`info`), then runs
the bench's named coroutines (`handlers[name](fake, *args)`) on request until told to stop."""
from __future__ import annotations

import asyncio
import multiprocessing
import traceback
from typing import Any, Awaitable, Callable

Handler = Callable[..., Awaitable[Any]]


def serve(conn, make_fake: Callable[[], Any], info: Callable[[Any], dict],
          handlers: dict[str, Handler]) -> None:
    """The child's side: call it from a module-level function given to RemoteFake."""
    asyncio.run(_serve(conn, make_fake, info, handlers))


async def _serve(conn, make_fake, info, handlers) -> None:
    fake = make_fake()
    await fake.start()
    loop = asyncio.get_running_loop()
    try:
        conn.send(("ok", info(fake)))
        while (request := await loop.run_in_executor(None, conn.recv)) is not None:
            name, args = request
            try:
                conn.send(("ok", await handlers[name](fake, *args)))
            except Exception:
                conn.send(("error", traceback.format_exc()))
    finally:
        await fake.stop()


class RemoteFake:
    """The parent's side. `target(conn)` runs in a spawned process and calls `serve`."""

    def __init__(self, target: Callable[[Any], None]):
        ctx = multiprocessing.get_context("spawn")   # no fork of a process with running threads
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=target, args=(child,), daemon=True)

    async def start(self) -> dict:
        self._process.start()
        return await self._reply(60)

    async def call(self, name: str, *args: Any, timeout: float = 300) -> Any:
        self._conn.send((name, args))
        return await self._reply(timeout)

    async def _reply(self, timeout: float) -> Any:
        def recv():
            if not self._conn.poll(timeout):
                raise TimeoutError(f"the fake's process did not answer in {timeout} s")
            return self._conn.recv()
        status, value = await asyncio.to_thread(recv)
        if status != "ok":
            raise RuntimeError(f"in the fake's process:\n{value}")
        return value

    async def stop(self) -> None:
        if self._process.is_alive():
            self._conn.send(None)
            await asyncio.to_thread(self._process.join, 15)
        if self._process.is_alive():
            self._process.kill()
