"""The Slack fake's server: the aiohttp app on 127.0.0.1 (port 0) with its routes, the state every
surface shares, and the recording a test waits on."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Optional

from tests.fakes.shared import Changes, Holds, LoopbackServer, Url
from tests.fakes.slack.events import Events
from tests.fakes.slack.files import Files
from tests.fakes.slack.http_mode import PUBLISHED_SIGNING_VECTOR, HttpMode
from tests.fakes.slack.interactions import TRIGGER_TTL_S, Interactions
from tests.fakes.slack.protocol import Call
from tests.fakes.slack.socket_mode import ACK_DEADLINE_S, SocketMode, _Conn
from tests.fakes.slack.web_api import WebApi
from tests.fakes.slack.workspace import Workspace


class SlackFake(Workspace, Events, WebApi, Files, Interactions, HttpMode, SocketMode, LoopbackServer):
    """Loopback Slack; see the package docstring."""

    def __init__(
        self,
        bot_token: str = "xoxb-test",
        app_token: str = "xapp-test",
        signing_secret: str = PUBLISHED_SIGNING_VECTOR["signing_secret"],
        bot_user_id: str = "UBOT",
        team_id: str = "T1",
        *,
        bot_id: str = "BBOT",
        app_id: str = "A1",
        bot_name: str = "confab",
        team_domain: str = "confab-test",
        team_name: str = "Confab Test",
        verification_token: str = "vErIfIcAtIoNtOkEn",
        echo_bot_messages: bool = True,
        share_delay: float = 0.05,
        trigger_ttl: float = TRIGGER_TTL_S,
        ack_deadline: float = ACK_DEADLINE_S,
        redeliver_unacked: bool = True,
        max_retries: int = 3,
    ):
        self.bot_token = bot_token
        self.app_token = app_token
        self.signing_secret = signing_secret
        self.bot_user_id = bot_user_id
        self.team_id = team_id
        self.bot_id = bot_id
        self.app_id = app_id
        self.bot_name = bot_name
        self.team_domain = team_domain
        self.team_name = team_name
        self.verification_token = verification_token
        self.echo_bot_messages = echo_bot_messages
        self.share_delay = share_delay
        self.trigger_ttl = trigger_ttl
        self.ack_deadline = ack_deadline
        # Slack redelivers an events_api envelope that is not acknowledged in time, with
        # retry_attempt 1..3 and retry_reason "timeout" (compressed here to one ack_deadline apart).
        self.redeliver_unacked = redeliver_unacked
        self.max_retries = max_retries
        # HTTP mode: when set and no Socket Mode connection is open, events the fake generates
        # on its own (echoes of the bot's messages) are signed and POSTed here.
        self.request_url: Optional[str] = None

        # recordings
        self.calls: list[Call] = []
        self.problems: list[str] = []
        self.response_url_posts: list[dict] = []
        self.ephemerals: list[dict] = []
        self.views: list[dict] = []
        self.deleted: list[dict] = []
        self.orphans: list[dict] = []
        self.sent_envelopes: list[dict] = []
        self.acks: list[dict] = []
        self.socket_messages: list[Any] = []  # every frame a client sent, parsed when JSON
        self.echoed_envelopes: list[str] = []
        self.redeliveries: list[dict] = []
        self.connections_opened = 0
        self.connections_open_requests = 0

        # state
        self.users: dict[str, dict] = {}
        self.usergroups: dict[str, list[str]] = {}     # user group (subteam) id -> its members
        self.channels: dict[str, dict] = {}
        self.files: dict[str, dict] = {}
        self.file_contents: dict[str, bytes] = {}
        self.uploads: dict[str, dict] = {}  # upload key -> pending upload
        self._messages: dict[str, list[dict]] = {}
        self._triggers: dict[str, dict] = {}
        self._response_urls: dict[str, dict] = {}
        self._tickets: dict[str, float] = {}
        self._rate_limits: dict[str, list] = {}
        self._failures: dict[str, list] = {}
        self._holds = Holds()  # Web API methods held unanswered
        self._download_redirects: dict[str, list] = {}
        self._conns: list[_Conn] = []
        self._ack_futures: dict[str, asyncio.Future] = {}
        self._envelope_sent_at: dict[str, float] = {}
        self._changes = Changes()
        self._returned_calls: set[int] = set()
        self._tasks: set[asyncio.Task] = set()
        self._last_ts_us = 0
        self._counter = 0

        self._port: Optional[int] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None

        self._seed()

    async def start(self) -> "SlackFake":
        if self._runner is not None:
            return self
        self._loop = asyncio.get_running_loop()
        self._port = await self._serve(client_max_size=1024 ** 3, shutdown_timeout=1.0)
        return self

    async def stop(self) -> None:
        self._holds.release_all()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            try:
                await asyncio.wait_for(task, 1)
            except BaseException:
                pass
        for conn in list(self._conns):
            try:
                await asyncio.wait_for(conn.ws.close(code=1001, message=b"server shutdown"), 1)
            except BaseException:
                pass
        for fut in self._ack_futures.values():
            if not fut.done():
                fut.cancel()
        await self._unserve()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("SlackFake is not started")
        return self._port

    base_url = Url("http", "/")
    api_url = Url("http", "/api/")

    def new_ts(self) -> str:
        us = int(time.time() * 1_000_000)
        if us <= self._last_ts_us:
            us = self._last_ts_us + 1
        self._last_ts_us = us
        return f"{us // 1_000_000}.{us % 1_000_000:06d}"

    def _next_n(self) -> int:
        self._counter += 1
        return self._counter

    def _notify(self) -> None:
        self._changes.notify()

    async def wait_until(self, predicate: Callable[[], Any], timeout: float = 10, what: str = "a condition") -> Any:
        """Waits (bounded) until predicate() is truthy; re-checked whenever the fake records something."""
        try:
            return await self._changes.until(predicate, timeout)
        except asyncio.TimeoutError:
            raise asyncio.TimeoutError(f"SlackFake: timed out after {timeout}s waiting for {what}") from None

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _problem(self, text: str) -> None:
        self.problems.append(text)
        self._notify()

    async def wait_for(self, method: str, predicate: Optional[Callable[[Call], bool]] = None,
                       timeout: float = 10, *, since: Optional[int] = None) -> Call:
        """The first call to `method` (matching `predicate`) not returned by an earlier wait_for.

        `since` (an index into `calls`, e.g. `len(fake.calls)` taken earlier) limits the search to
        later calls.
        """

        def find() -> Optional[Call]:
            start = since or 0
            for i in range(start, len(self.calls)):
                c = self.calls[i]
                if c.method != method or i in self._returned_calls:
                    continue
                if predicate is None or predicate(c):
                    self._returned_calls.add(i)
                    return c
            return None

        return await self.wait_until(find, timeout, f"a {method} call")

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]
