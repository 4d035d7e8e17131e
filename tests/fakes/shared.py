"""What both loopback fakes (tests/fakes/slack, tests/fakes/discord) share: serving their aiohttp
app on 127.0.0.1, waking their bounded waits whenever they record something, and holding requests
unanswered until a test releases them."""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Hashable, Optional, Self

from aiohttp import web


class LoopbackServer:
    """A fake's aiohttp app served on 127.0.0.1, port 0; ``async with fake:`` starts and stops it
    (each fake's own ``start`` and ``stop`` call ``_serve`` and ``_unserve``).

    Each surface of a fake declares the paths it serves in its class's ``_PATHS``: (HTTP method,
    path, name of the handler method)."""

    _runner: Optional[web.AppRunner] = None

    async def _serve(self, client_max_size: int, **options: Any) -> int:
        """Serves every surface's ``_PATHS`` on 127.0.0.1 and returns the port the system chose."""
        app = web.Application(client_max_size=client_max_size)
        for cls in type(self).__mro__:
            for method, path, handler in vars(cls).get("_PATHS", ()):
                app.router.add_route(method, path, getattr(self, handler))
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, **options)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return self._runner.addresses[0][1]

    async def _unserve(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def start(self) -> Self:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()


class Url:
    """A URL on the fake's own port, declared on its class: ``api_url = Url("http", "/api/")``."""

    def __init__(self, scheme: str, path: str) -> None:
        self.scheme, self.path = scheme, path

    def __get__(self, fake: Any, owner: Optional[type] = None) -> Any:
        if fake is None:
            return self
        return f"{self.scheme}://127.0.0.1:{fake.port}{self.path}"


class Changes:
    """Wakes the waits on a fake whenever the fake records something."""

    POLL_S = 0.2

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future] = []

    def notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def until(self, predicate: Callable[[], Any], timeout: float) -> Any:
        """The first truthy value of ``predicate()``, checked now, after every ``notify`` and
        every POLL_S besides: a predicate may read what the fake never records (the store of a
        Confab in another process settles after the fake's last request); asyncio.TimeoutError
        after ``timeout`` seconds."""

        async def loop() -> Any:
            while True:
                result = predicate()
                if result:
                    return result
                fut = asyncio.get_running_loop().create_future()
                self._waiters.append(fut)
                await asyncio.wait({fut}, timeout=self.POLL_S)
                if not fut.done():
                    self._waiters.remove(fut)

        return await asyncio.wait_for(loop(), timeout)


class Holds:
    """Requests a fake keeps unanswered until a test releases them: a client stuck mid-work, for
    a kill to land at a known point. Each fake keys them its own way (a Web API method, a route)."""

    def __init__(self) -> None:
        self._gates: dict[Hashable, asyncio.Event] = {}

    def hold(self, key: Hashable) -> None:
        self._gates.setdefault(key, asyncio.Event())

    def release(self, key: Hashable) -> None:
        gate = self._gates.pop(key, None)
        if gate is not None:
            gate.set()

    def release_all(self) -> None:
        for key in list(self._gates):
            self.release(key)

    def find(self, matches: Callable[[Any], bool]) -> Optional[asyncio.Event]:
        """The gate of the first held key that ``matches``; a request waits on it."""
        return next((gate for key, gate in self._gates.items() if matches(key)), None)
