"""A loopback fake of Slack for tests: Web API, file hosting, Socket Mode and HTTP-mode signing.

Point the real libraries at it::

    fake = SlackFake()
    await fake.start()
    client = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)
    app = AsyncApp(client=client, signing_secret=fake.signing_secret)
    handler = AsyncSocketModeHandler(app, app_token=fake.app_token)
    await handler.connect_async()
    await fake.wait_connected()
    env_ids = await fake.send_mention("<@UBOT> hello")

The fake is meant to be as strict as Slack, never kinder: wrong token types, missing text, unknown
channels, messages that do not exist, stale trigger ids and unauthenticated file downloads fail the
way they fail on Slack (``ok: false`` with Slack's error code, or Slack's HTML login page for
files). Where Slack's behaviour is silent but almost surely a bug in the client (a reply to a
thread that does not exist, an upload whose length differs from the one announced, a late ack),
the fake does what Slack does and also appends a line to ``fake.problems``.

Everything binds 127.0.0.1 port 0, everything is recorded, and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import hmac
import json
import mimetypes
import re
import secrets
import string
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import aiohttp
from aiohttp import web

__all__ = [
    "SlackFake",
    "Call",
    "load_fixture",
    "sign",
    "FIXTURES_DIR",
    "PUBLISHED_SIGNING_VECTOR",
]

FIXTURES_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "slack"

# The example request from https://api.slack.com/authentication/verifying-requests-from-slack
PUBLISHED_SIGNING_VECTOR = {
    "signing_secret": "8f742231b10e8888abcd99yyyzzz85a5",
    "timestamp": "1531420618",
    "body": (
        "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
        "&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
        "&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
        "&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    ),
    "signature": "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
}

# Slack's own limits, used to refuse what Slack refuses.
MAX_TEXT = 40000
MAX_BLOCKS_MESSAGE = 50
MAX_BLOCKS_VIEW = 100
MAX_SECTION_TEXT = 3000
MAX_HEADER_TEXT = 150
MAX_BUTTON_TEXT = 75
MAX_VIEW_TITLE = 24
ACK_DEADLINE_S = 3.0
TRIGGER_TTL_S = 3.0
RESPONSE_URL_MAX_USES = 5
# Methods whose documented content type is form/query only: Slack ignores a JSON body's arguments.
FORM_ONLY_METHODS = {"conversations.history", "conversations.replies", "conversations.info", "users.info",
                     "files.info", "usergroups.users.list"}
KNOWN_BLOCK_TYPES = {
    "actions", "context", "divider", "file", "header", "image", "input", "markdown",
    "rich_text", "section", "video", "table", "context_actions",
}

_TS_RE = re.compile(r"^\d+\.\d+$")
_METHOD_RE = re.compile(r"^[a-zA-Z]+(\.[a-zA-Z]+)+$")
_EMOJI_RE = re.compile(r"^[a-z0-9_+\-']+(::skin-tone-[2-6])?$")
_MENTION_RE = re.compile(r"<@([UWB][A-Z0-9]+)(?:\|[^>]*)?>")

_LOGIN_PAGE = """<!DOCTYPE html>
<html lang="en-US"><head><meta charset="utf-8"><title>Slack</title></head>
<body class="signin"><h1>Sign in to your workspace</h1>
<form id="signin_form" action="/signin" method="post"><input type="email" name="email">
<input type="password" name="password"><button type="submit">Sign in</button></form>
</body></html>
"""


def load_fixture(name: str) -> dict:
    """Loads tests/fixtures/slack/<name>.json without its "_source" note (and any other "_" key)."""
    if not name.endswith(".json"):
        name += ".json"
    data = json.loads((FIXTURES_DIR / name).read_text(encoding="utf-8"))
    return {k: v for k, v in data.items() if not k.startswith("_")}


def sign(secret: str, timestamp: str | int, body: bytes | str) -> str:
    """Slack's v0 request signature: v0=HMAC-SHA256(secret, "v0:{timestamp}:{body}")."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    base = b"v0:" + str(timestamp).encode("ascii") + b":" + body
    return "v0=" + hmac.new(secret.encode("utf-8"), base, hashlib.sha256).hexdigest()


def _rand_id(prefix: str, n: int = 10) -> str:
    alphabet = string.ascii_uppercase + string.digits
    return prefix + "".join(secrets.choice(alphabet) for _ in range(n))


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    return str(value).strip().lower() in ("1", "true", "yes")


def _rich_text_blocks(text: str) -> list:
    """The rich_text block a Slack client attaches to a typed message (user mentions become user elements)."""
    elements: list = []
    pos = 0
    for m in _MENTION_RE.finditer(text):
        if m.start() > pos:
            elements.append({"type": "text", "text": text[pos:m.start()]})
        elements.append({"type": "user", "user_id": m.group(1)})
        pos = m.end()
    if pos < len(text):
        elements.append({"type": "text", "text": text[pos:]})
    if not elements:
        return []
    block_id = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(5))
    return [{
        "type": "rich_text",
        "block_id": block_id,
        "elements": [{"type": "rich_text_section", "elements": elements}],
    }]


class SlackApiFailure(Exception):
    """Raised inside a handler to answer {"ok": false, "error": ...}."""

    def __init__(self, error: str, *messages: str, status: int = 200, **extra: Any):
        super().__init__(error)
        self.error = error
        self.messages = list(messages)
        self.status = status
        self.extra = extra


@dataclass
class Call:
    """One request the fake received."""

    method: str  # Web API method name, or "upload", "files.download", "response_url"
    params: dict
    headers: dict
    time: float
    http_method: str = "POST"
    path: str = ""
    status: int = 200
    response: Any = None
    body: bytes = b""
    content_type: str = ""

    @property
    def ok(self) -> bool:
        if isinstance(self.response, dict):
            return bool(self.response.get("ok"))
        return 200 <= self.status < 300

    @property
    def error(self) -> Optional[str]:
        if isinstance(self.response, dict):
            return self.response.get("error")
        return None


@dataclass
class _Conn:
    ws: web.WebSocketResponse
    number: int
    opened: float
    ticket: str
    closed: bool = False
    received: list = field(default_factory=list)


class SlackFake:
    """Loopback Slack. See the module docstring."""

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
        self._holds: dict[str, asyncio.Event] = {}
        self._download_redirects: dict[str, list] = {}
        self._conns: list[_Conn] = []
        self._ack_futures: dict[str, asyncio.Future] = {}
        self._envelope_sent_at: dict[str, float] = {}
        self._waiters: list[asyncio.Future] = []
        self._returned_calls: set[int] = set()
        self._tasks: set[asyncio.Task] = set()
        self._last_ts_us = 0
        self._counter = 0

        self._runner: Optional[web.AppRunner] = None
        self._port: Optional[int] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None

        self._seed()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> "SlackFake":
        if self._runner is not None:
            return self
        self._loop = asyncio.get_running_loop()
        app = web.Application(client_max_size=1024 ** 3)
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_post("/upload/v1/{key}", self._handle_upload)
        app.router.add_get("/files/{tf}/download/{name}", self._handle_file_download)
        app.router.add_get("/files/{tf}/{name}", self._handle_file_download)
        app.router.add_get("/link/", self._handle_ws)
        app.router.add_get("/link", self._handle_ws)
        app.router.add_post("/commands/{team}/{n}/{secret}", self._handle_response_url)
        app.router.add_post("/actions/{team}/{n}/{secret}", self._handle_response_url)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        for method in list(self._holds):
            self.release(method)
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
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> "SlackFake":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("SlackFake is not started")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    # ------------------------------------------------------------------ workspace

    def _seed(self) -> None:
        self.add_user(self.bot_user_id, self.bot_name, real_name=self.bot_name.title(), is_bot=True)
        self.add_user("U1", "alice", real_name="Alice Example", is_admin=True)
        self.add_user("U2", "bob", real_name="Bob Example")
        self.add_channel("C1", "general", members=["U1", "U2", self.bot_user_id])
        self.add_channel("C2", "random", members=["U1", "U2"])  # the bot is not a member
        self.add_channel("D1", None, is_im=True, user="U1")

    def add_user(self, user_id: str, name: str, *, real_name: Optional[str] = None, is_bot: bool = False,
                 is_admin: bool = False, tz: str = "Europe/Berlin", deleted: bool = False, **extra: Any) -> dict:
        user = load_fixture("user")
        real_name = real_name or name
        user.update({
            "id": user_id, "team_id": self.team_id, "name": name, "real_name": real_name,
            "deleted": deleted, "is_bot": is_bot, "is_admin": is_admin, "tz": tz,
            "tz_label": "Central European Time", "tz_offset": 3600, "is_app_user": False,
        })
        user["profile"] = dict(user["profile"], real_name=real_name, real_name_normalized=real_name,
                               display_name=name, display_name_normalized=name, team=self.team_id)
        if is_bot:
            user["profile"]["bot_id"] = self.bot_id if user_id == self.bot_user_id else _rand_id("B")
            user["profile"]["api_app_id"] = self.app_id
        user.update(extra)
        self.users[user_id] = user
        return user

    def add_channel(self, channel_id: str, name: Optional[str], *, is_im: bool = False, is_private: bool = False,
                    user: Optional[str] = None, members: Optional[Iterable[str]] = None,
                    is_archived: bool = False) -> dict:
        if is_im:
            if user is None:
                raise ValueError("an IM needs the user it is with")
            members = [user, self.bot_user_id]
        ch = {
            "id": channel_id,
            "name": name,
            "is_channel": not is_im and not is_private,
            "is_group": is_private,
            "is_im": is_im,
            "is_mpim": False,
            "is_private": is_private or is_im,
            "is_archived": is_archived,
            "user": user,
            "members": set(members or []),
            "created": int(time.time()) - 86400,
        }
        self.channels[channel_id] = ch
        self._messages.setdefault(channel_id, [])
        return ch

    def channel_type(self, channel_id: str) -> str:
        ch = self.channels.get(channel_id)
        if ch is None:
            return {"D": "im", "G": "group"}.get(channel_id[:1], "channel")
        if ch["is_im"]:
            return "im"
        if ch["is_mpim"]:
            return "mpim"
        return "group" if ch["is_private"] else "channel"

    def im_with(self, user_id: str) -> str:
        """The id of the bot's DM channel with a user (created on first use, as Slack does)."""
        for ch in self.channels.values():
            if ch["is_im"] and ch["user"] == user_id:
                return ch["id"]
        cid = _rand_id("D")
        self.add_channel(cid, None, is_im=True, user=user_id)
        return cid

    # ------------------------------------------------------------------ switches

    def rate_limit(self, method: str, times: int = 1, retry_after: int = 1) -> None:
        """The next `times` calls to `method` answer HTTP 429 with Retry-After, as Slack does."""
        self._rate_limits.setdefault(method, []).extend([int(retry_after)] * times)

    def hold(self, method: str) -> None:
        """Calls to `method` wait, unanswered, until `release(method)` (or stop()): a client
        stuck mid-work, for a kill to land at a known point."""
        self._holds.setdefault(method, asyncio.Event())

    def release(self, method: str) -> None:
        held = self._holds.pop(method, None)
        if held is not None:
            held.set()

    def redirect_download(self, file_id: str, location: str) -> None:
        """The next authenticated download of `file_id` answers 302 to `location`, as Slack does
        for some files (files.slack.com -> files-origin.slack.com on Enterprise Grid, a PDF's
        url_private -> slack-files.com)."""
        self._download_redirects.setdefault(file_id, []).append(location)

    def fail_next(self, method: str, error: str, times: int = 1, **extra: Any) -> None:
        """The next `times` calls to `method` answer {"ok": false, "error": error, **extra}."""
        self._failures.setdefault(method, []).extend([(error, extra)] * times)

    # ------------------------------------------------------------------ ids, waiting

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
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def wait_until(self, predicate: Callable[[], Any], timeout: float = 10, what: str = "a condition") -> Any:
        """Waits (bounded) until predicate() is truthy; re-checked whenever the fake records something."""
        async def loop() -> Any:
            while True:
                result = predicate()
                if result:
                    return result
                fut = asyncio.get_running_loop().create_future()
                self._waiters.append(fut)
                await fut

        try:
            return await asyncio.wait_for(loop(), timeout)
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

    # ------------------------------------------------------------------ messages store

    def messages(self, channel: str, thread_ts: Optional[str] = None, *, top_level_only: bool = False) -> list[dict]:
        """Messages in a channel, oldest first: posted (and updated) by the bot, and the users'
        messages the fake's event builders produced. With thread_ts: that thread, parent first."""
        msgs = [m for m in self._messages.get(channel, []) if not m.get("_orphan")]
        if thread_ts is not None:
            msgs = [m for m in msgs if m["ts"] == thread_ts or m.get("thread_ts") == thread_ts]
        elif top_level_only:
            msgs = [m for m in msgs if self._is_top_level(m)]
        return [self._public(m) for m in sorted(msgs, key=lambda m: float(m["ts"]))]

    def bot_messages(self, channel: str, thread_ts: Optional[str] = None) -> list[dict]:
        return [m for m in self.messages(channel, thread_ts) if m.get("bot_id") == self.bot_id]

    def count_bot_messages(self, channel: str, predicate: Callable[[dict], bool]) -> int:
        """How many of the bot's messages in a channel match, without copying them (for
        benchmarks that poll after every call)."""
        return sum(1 for m in self._messages.get(channel, [])
                   if not m.get("_orphan") and m.get("bot_id") == self.bot_id and predicate(m))

    async def wait_message(self, channel: str, predicate: Optional[Callable[[dict], bool]] = None, *,
                           thread_ts: Optional[str] = None, timeout: float = 10) -> dict:
        """Waits until a message in the channel (thread) matches predicate; returns the newest match."""

        def find() -> Optional[dict]:
            for m in reversed(self.messages(channel, thread_ts)):
                if predicate is None or predicate(m):
                    return m
            return None

        return await self.wait_until(find, timeout, f"a message in {channel}")

    @staticmethod
    def _is_top_level(m: dict) -> bool:
        return m.get("thread_ts") in (None, m["ts"]) or m.get("subtype") == "thread_broadcast"

    @staticmethod
    def _public(m: dict) -> dict:
        return {k: copy.deepcopy(v) for k, v in m.items() if not k.startswith("_")}

    def _find_message(self, channel: str, ts: str) -> Optional[dict]:
        for m in self._messages.get(channel, []):
            if m["ts"] == ts and not m.get("_orphan"):
                return m
        return None

    def _store_message(self, channel: str, msg: dict) -> dict:
        """Stores a message and keeps the parent's thread fields as Slack shows them."""
        msgs = self._messages.setdefault(channel, [])
        existing = self._find_message(channel, msg["ts"])
        if existing is not None:
            return existing
        stored = copy.deepcopy(msg)
        stored.pop("channel_type", None)
        stored.pop("event_ts", None)
        stored["_channel"] = channel
        msgs.append(stored)
        tts = stored.get("thread_ts")
        if tts and tts != stored["ts"]:
            parent = self._find_message(channel, tts)
            if parent is not None:
                parent["thread_ts"] = tts
                parent["reply_count"] = parent.get("reply_count", 0) + 1
                users = parent.setdefault("reply_users", [])
                author = stored.get("user") or stored.get("bot_id")
                if author and author not in users:
                    users.append(author)
                parent["reply_users_count"] = len(users)
                parent["latest_reply"] = stored["ts"]
        self._notify()
        return stored

    # ------------------------------------------------------------------ files

    def _file_urls(self, file_id: str, name: str) -> dict:
        quoted = urllib.parse.quote(name)
        base = f"{self.base_url}files/{self.team_id}-{file_id}"
        return {
            "url_private": f"{base}/{quoted}",
            "url_private_download": f"{base}/download/{quoted}",
            "permalink": f"https://{self.team_domain}.slack.com/files/{self.bot_user_id}/{file_id}/{quoted}",
            "permalink_public": f"https://slack-files.com/{self.team_id}-{file_id}-{secrets.token_hex(5)}",
        }

    def add_file(self, content: bytes, name: str, mimetype: str, subtype: Optional[str] = None, **extra: Any) -> dict:
        """Hosts `content` and returns the Slack file object for it (downloads need the bot token).

        `subtype="slack_audio"` builds an audio clip (see `audio_clip_file` for the usual way).
        Any key in `extra` overrides the file object (e.g. user="U2", duration_ms=1200).
        """
        file_id = extra.pop("id", None) or _rand_id("F")
        now = int(time.time())
        ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
        if subtype == "slack_audio":
            f = load_fixture("file_slack_audio")
            f["filetype"] = {"audio/mp4": "m4a", "audio/webm": "webm"}.get(mimetype, ext or "webm")
            f["pretty_type"] = {"m4a": "MPEG 4 Audio", "webm": "WebM"}.get(f["filetype"], f["filetype"].upper())
            f["aac"] = f"{self.base_url}files/{self.team_id}-{file_id}/download/file.aac"
            f["vtt"] = f"{self.base_url}files/{self.team_id}-{file_id}/download/file.vtt"
        elif mimetype.startswith("image/"):
            f = load_fixture("file_image")
            f["filetype"] = ext or mimetype.split("/", 1)[1]
            f["pretty_type"] = f["filetype"].upper()
            for k in list(f):
                if k.startswith("thumb_") and isinstance(f[k], str) and k != "thumb_tiny":
                    f[k] = f"{self.base_url}files/{self.team_id}-{file_id}/download/{urllib.parse.quote(name)}"
        else:
            f = load_fixture("file_image")
            for k in [k for k in f if k.startswith("thumb_") or k.startswith("original_")]:
                del f[k]
            f["filetype"] = ext or "binary"
            f["pretty_type"] = f["filetype"].upper()
        f.update({
            "id": file_id, "created": now, "timestamp": now, "name": name, "title": name,
            "mimetype": mimetype, "size": len(content), "user": extra.get("user", "U1"),
            "user_team": self.team_id,
        })
        if subtype is not None:
            f["subtype"] = subtype
        f.update(self._file_urls(file_id, name))
        f.update(extra)
        self.files[file_id] = f
        self.file_contents[file_id] = bytes(content)
        return copy.deepcopy(f)

    def audio_clip_file(self, content: bytes, *, mimetype: str = "audio/webm", duration_ms: int = 3000,
                        user: str = "U1", transcript: Optional[str] = None, samples: int = 100, **extra: Any) -> dict:
        """A Slack audio clip (subtype slack_audio) as Slack puts it in a message's files[]."""
        if mimetype not in ("audio/webm", "audio/mp4"):
            raise ValueError("Slack records clips as audio/webm or audio/mp4")
        name = "audio_message.webm" if mimetype == "audio/webm" else "audio_message.m4a"
        wave = [int(50 + 45 * ((i * 37) % 11) / 10) % 101 for i in range(samples)]
        transcription = ({"status": "complete", "locale": "en-US",
                          "preview": {"content": transcript, "has_more": False}}
                         if transcript is not None else {"status": "processing"})
        return self.add_file(content, extra.pop("name", name), mimetype, "slack_audio", duration_ms=duration_ms,
                             audio_wave_samples=wave, transcription=transcription, user=user, **extra)

    def image_file(self, content: bytes, name: str = "image.png", mimetype: str = "image/png",
                   user: str = "U1", **extra: Any) -> dict:
        return self.add_file(content, name, mimetype, user=user, **extra)

    # ------------------------------------------------------------------ event builders

    def _user_message(self, *, etype: str, text: str, user: str, channel: str, ts: Optional[str],
                      thread_ts: Optional[str], files: Optional[list], with_channel_type: bool) -> dict:
        ts = ts or self.new_ts()
        ev: dict = load_fixture("app_mention" if etype == "app_mention" else "message_channel")
        ev.update({
            "client_msg_id": str(uuid.uuid4()), "type": etype, "text": text, "user": user, "ts": ts,
            "blocks": _rich_text_blocks(text), "team": self.team_id, "channel": channel, "event_ts": ts,
        })
        if not ev["blocks"]:
            del ev["blocks"]
        if with_channel_type:
            ev["channel_type"] = self.channel_type(channel)
        else:
            ev.pop("channel_type", None)
        if thread_ts is not None:
            ev["thread_ts"] = thread_ts
            parent = self._find_message(channel, thread_ts)
            if parent is not None and parent.get("user"):
                ev["parent_user_id"] = parent["user"]
        if files:
            ev["files"] = copy.deepcopy(list(files))
            ev["upload"] = False
            ev["display_as_bot"] = False
            if etype == "message":
                ev["subtype"] = "file_share"
        return ev

    def app_mention_event(self, text: Optional[str] = None, *, user: str = "U1", channel: str = "C1",
                          ts: Optional[str] = None, thread_ts: Optional[str] = None,
                          files: Optional[list] = None) -> dict:
        """An app_mention event. `text` defaults to "<@BOT> question"."""
        if text is None:
            text = f"<@{self.bot_user_id}> question"
        if f"<@{self.bot_user_id}" not in text:
            self._problem(f"app_mention_event built without <@{self.bot_user_id}> in its text")
        ev = self._user_message(etype="app_mention", text=text, user=user, channel=channel, ts=ts,
                                thread_ts=thread_ts, files=files, with_channel_type=False)
        self._store_message(channel, dict(ev, type="message"))
        return ev

    def message_event(self, text: str = "hello", *, user: str = "U1", channel: str = "C1",
                      ts: Optional[str] = None, thread_ts: Optional[str] = None,
                      files: Optional[list] = None, subtype: Optional[str] = None) -> dict:
        """A message event as message.channels / message.groups / message.im deliver it
        (channel_type follows the channel). With files: subtype file_share."""
        ev = self._user_message(etype="message", text=text, user=user, channel=channel, ts=ts,
                                thread_ts=thread_ts, files=files, with_channel_type=True)
        if subtype is not None:
            ev["subtype"] = subtype
        self._store_message(channel, ev)
        return ev

    def im_event(self, text: str = "hello", *, user: str = "U1", channel: Optional[str] = None, **kw: Any) -> dict:
        """A message.im event: a DM to the bot (channel_type "im")."""
        return self.message_event(text, user=user, channel=channel or self.im_with(user), **kw)

    def file_share_event(self, files: list, text: str = "", **kw: Any) -> dict:
        """A message with subtype file_share carrying `files` (e.g. from image_file / audio_clip_file)."""
        return self.message_event(text, files=files, **kw)

    def audio_clip_event(self, content: bytes, *, mimetype: str = "audio/webm", duration_ms: int = 3000,
                         user: str = "U1", channel: str = "C1", thread_ts: Optional[str] = None,
                         transcript: Optional[str] = None, text: str = "") -> dict:
        """A voice clip: a file_share message whose only file is a slack_audio clip."""
        f = self.audio_clip_file(content, mimetype=mimetype, duration_ms=duration_ms, user=user, transcript=transcript)
        return self.message_event(text, user=user, channel=channel, thread_ts=thread_ts, files=[f])

    def bot_message_event(self, text: str = "beep", *, bot_id: str = "B0OTHER", username: str = "otherbot",
                          channel: str = "C1", ts: Optional[str] = None, thread_ts: Optional[str] = None) -> dict:
        """A message with subtype bot_message (no `user` field), as integrations post them."""
        ts = ts or self.new_ts()
        ev = load_fixture("bot_message")
        ev.update({"text": text, "ts": ts, "event_ts": ts, "bot_id": bot_id, "username": username,
                   "channel": channel, "channel_type": self.channel_type(channel)})
        if thread_ts is not None:
            ev["thread_ts"] = thread_ts
        self._store_message(channel, ev)
        return ev

    def mention_pair(self, text: Optional[str] = None, *, user: str = "U1", channel: str = "C1",
                     ts: Optional[str] = None, thread_ts: Optional[str] = None,
                     files: Optional[list] = None) -> tuple[dict, dict]:
        """(app_mention, message): the two events Slack sends for one message that mentions the bot,
        with the same ts, in two event_callbacks with different event_ids."""
        if text is None:
            text = f"<@{self.bot_user_id}> question"
        if self.channel_type(channel) == "im":
            raise ValueError("Slack sends no app_mention for a DM with the app; use im_event")
        ts = ts or self.new_ts()
        mention = self.app_mention_event(text, user=user, channel=channel, ts=ts, thread_ts=thread_ts, files=files)
        message = self._user_message(etype="message", text=text, user=user, channel=channel, ts=ts,
                                     thread_ts=thread_ts, files=files, with_channel_type=True)
        message["client_msg_id"] = mention["client_msg_id"]
        if "blocks" in mention:
            message["blocks"] = copy.deepcopy(mention["blocks"])
        return mention, message

    # ------------------------------------------------------------------ envelope/payload builders

    def events_api(self, event: dict, *, event_id: Optional[str] = None, event_time: Optional[int] = None) -> dict:
        """The event_callback body that wraps an event (Socket Mode payload / HTTP body)."""
        body = load_fixture("event_callback")
        body.update({
            "token": self.verification_token,
            "team_id": self.team_id,
            "context_team_id": self.team_id,
            "context_enterprise_id": None,
            "api_app_id": self.app_id,
            "event": copy.deepcopy(event),
            "event_id": event_id or _rand_id("Ev"),
            "event_time": event_time if event_time is not None else int(float(event.get("event_ts") or time.time())),
            "authorizations": [{
                "enterprise_id": None, "team_id": self.team_id, "user_id": self.bot_user_id,
                "is_bot": True, "is_enterprise_install": False,
            }],
        })
        ctx = {"et": event.get("type"), "tid": self.team_id, "aid": self.app_id, "cid": event.get("channel")}
        body["event_context"] = "4-" + base64.urlsafe_b64encode(json.dumps(ctx).encode()).decode().rstrip("=")
        return body

    # alias in the vocabulary of the HTTP Events API
    event_callback = events_api

    def _new_trigger(self, user: str) -> str:
        trig = f"{secrets.randbelow(10**12)}.{secrets.randbelow(10**11)}.{secrets.token_hex(16)}"
        self._triggers[trig] = {"created": time.monotonic(), "used": False, "user": user}
        return trig

    def _new_response_url(self, kind: str, channel: Optional[str], message_ts: Optional[str] = None) -> str:
        n = f"{secrets.randbelow(10**12)}"
        path = f"/{kind}/{self.team_id}/{n}/{secrets.token_urlsafe(18)}"
        self._response_urls[path] = {"kind": kind, "uses": 0, "channel": channel, "message_ts": message_ts,
                                     "created": time.time()}
        return f"http://127.0.0.1:{self.port}{path}"

    def slash_commands(self, command: str = "/ask", text: str = "", *, user: str = "U1",
                       channel: str = "C1", **overrides: Any) -> dict:
        """A slash command's fields (all strings, as Slack form-encodes them): the Socket Mode
        slash_commands payload, or the HTTP form body via slash_command_body."""
        if not command.startswith("/"):
            raise ValueError("a slash command starts with /")
        ch = self.channels.get(channel)
        if ch is None:
            channel_name = "unknown"
        elif ch["is_im"]:
            channel_name = "directmessage"
        elif ch["is_private"]:
            channel_name = "privategroup"
        else:
            channel_name = ch["name"]
        p = load_fixture("slash_command")
        p.update({
            "token": self.verification_token,
            "team_id": self.team_id,
            "team_domain": self.team_domain,
            "channel_id": channel,
            "channel_name": channel_name,
            "user_id": user,
            "user_name": self.users.get(user, {}).get("name", user.lower()),
            "command": command,
            "text": text,
            "api_app_id": self.app_id,
            "is_enterprise_install": "false",
            "response_url": self._new_response_url("commands", channel),
            "trigger_id": self._new_trigger(user),
        })
        p.update({k: str(v) for k, v in overrides.items()})
        return p

    def interactive(self, action_id: str = "button", value: Optional[str] = None, *, user: str = "U1",
                    channel: str = "C1", message_ts: Optional[str] = None, message: Optional[dict] = None,
                    block_id: Optional[str] = None, action_type: str = "button", text: str = "Button",
                    ephemeral: bool = False, state: Optional[dict] = None) -> dict:
        """A block_actions payload: the user clicked `action_id` in a message in `channel`.

        The message defaults to the stored message with `message_ts`, else the bot's latest
        message in the channel."""
        if message is None and not ephemeral:
            if message_ts is not None:
                stored = self._find_message(channel, message_ts)
                if stored is None:
                    raise ValueError(f"no message {message_ts} in {channel}")
                message = self._public(stored)
            else:
                mine = self.bot_messages(channel)
                if not mine:
                    raise ValueError(f"the bot has posted nothing in {channel} to click on")
                message = mine[-1]
        if message is not None:
            message_ts = message["ts"]
        if message_ts is None:
            message_ts = self.new_ts()
        if block_id is None:
            block_id = "actions"
            for b in (message or {}).get("blocks", []) or []:
                for el in b.get("elements", []) or []:
                    if isinstance(el, dict) and el.get("action_id") == action_id:
                        block_id = b.get("block_id", block_id)
        action: dict = {"action_id": action_id, "block_id": block_id, "type": action_type,
                        "action_ts": f"{time.time():.6f}"}
        if action_type == "button":
            action["text"] = {"type": "plain_text", "text": text, "emoji": True}
            if value is not None:
                action["value"] = value
        elif action_type == "static_select":
            action["selected_option"] = {"text": {"type": "plain_text", "text": text, "emoji": True}, "value": value}
        elif value is not None:
            action["value"] = value
        ch = self.channels.get(channel, {})
        u = self.users.get(user, {})
        p = load_fixture("block_actions")
        p.update({
            "user": {"id": user, "username": u.get("name", user), "name": u.get("name", user), "team_id": self.team_id},
            "api_app_id": self.app_id,
            "token": self.verification_token,
            "container": {"type": "message", "message_ts": message_ts, "channel_id": channel,
                          "is_ephemeral": ephemeral},
            "trigger_id": self._new_trigger(user),
            "team": {"id": self.team_id, "domain": self.team_domain},
            "channel": {"id": channel, "name": ch.get("name") or ("directmessage" if ch.get("is_im") else channel)},
            "state": state if state is not None else {"values": {}},
            "response_url": self._new_response_url("actions", channel, message_ts),
            "actions": [action],
        })
        if message is not None:
            p["message"] = message
        else:
            p.pop("message", None)
        return p

    block_actions = interactive

    # ------------------------------------------------------------------ HTTP mode

    def sign_headers(self, body: bytes, timestamp: Optional[int | str] = None,
                     secret: Optional[str] = None) -> dict:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        return {
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": sign(secret if secret is not None else self.signing_secret, ts, body),
        }

    async def signed_post(self, url: str, body: bytes | str, content_type: str, timestamp: Optional[int | str] = None,
                          secret: Optional[str] = None, *, headers: Optional[dict] = None,
                          timeout: float = 10) -> tuple[int, str]:
        """POSTs `body` to a Confab URL signed the way Slack signs (v0 HMAC-SHA256); (status, text)."""
        if isinstance(body, str):
            body = body.encode("utf-8")
        h = {"Content-Type": content_type, "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
             "Accept": "application/json,*/*", "Accept-Encoding": "gzip,deflate"}
        h.update(self.sign_headers(body, timestamp, secret))
        if headers:
            h.update(headers)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s:
            async with s.post(url, data=body, headers=h) as r:
                return r.status, await r.text()

    def event_callback_body(self, event: dict, **kw: Any) -> bytes:
        return json.dumps(self.events_api(event, **kw)).encode("utf-8")

    def url_verification_body(self, challenge: Optional[str] = None) -> bytes:
        body = load_fixture("url_verification")
        body["token"] = self.verification_token
        body["challenge"] = challenge or secrets.token_urlsafe(40)
        return json.dumps(body).encode("utf-8")

    def slash_command_body(self, command: str = "/ask", text: str = "", **kw: Any) -> bytes:
        return urllib.parse.urlencode(self.slash_commands(command, text, **kw)).encode("ascii")

    def block_actions_body(self, *args: Any, **kw: Any) -> bytes:
        payload = self.interactive(*args, **kw)
        return ("payload=" + urllib.parse.quote(json.dumps(payload, separators=(",", ":")), safe="")).encode("ascii")

    JSON = "application/json"
    FORM = "application/x-www-form-urlencoded"

    # ------------------------------------------------------------------ Socket Mode

    @property
    def connection_count(self) -> int:
        """Socket Mode connections open now."""
        return len([c for c in self._conns if not c.closed])

    async def wait_connected(self, count: int = 1, timeout: float = 10) -> None:
        """Waits until `count` connections have been opened in total (not only now) and one is open."""
        await self.wait_until(lambda: self.connections_opened >= count and self.connection_count > 0,
                               timeout, f"{count} Socket Mode connection(s)")

    def _current_conn(self) -> Optional[_Conn]:
        open_ = [c for c in self._conns if not c.closed and not c.ws.closed]
        return open_[-1] if open_ else None

    async def send_envelope(self, type: str, payload: dict, accepts_response_payload: bool = False, *,
                            retry_attempt: Optional[int] = None, retry_reason: Optional[str] = None,
                            envelope_id: Optional[str] = None, timeout: float = 5) -> str:
        """Sends one Socket Mode envelope over the newest open connection; returns its envelope_id."""
        if type not in ("events_api", "slash_commands", "interactive"):
            raise ValueError(f"unknown envelope type {type!r}")
        conn = self._current_conn()
        if conn is None:
            await self.wait_until(lambda: self._current_conn() is not None, timeout, "an open Socket Mode connection")
            conn = self._current_conn()
        assert conn is not None
        eid = envelope_id or str(uuid.uuid4())
        env = load_fixture("socket_envelope")
        env.update({"envelope_id": eid, "payload": payload, "type": type,
                    "accepts_response_payload": accepts_response_payload})
        if type == "events_api":
            env["retry_attempt"] = retry_attempt or 0
            env["retry_reason"] = retry_reason or ""
        else:
            env.pop("retry_attempt", None)
            env.pop("retry_reason", None)
        self._ack_futures.setdefault(eid, asyncio.get_running_loop().create_future())
        self._envelope_sent_at[eid] = time.monotonic()
        self.sent_envelopes.append(env)
        await conn.ws.send_str(json.dumps(env))
        self._notify()
        if type == "events_api" and self.redeliver_unacked:
            self._spawn(self._redeliver_if_unacked(eid, payload, env["retry_attempt"]))
        return eid

    async def _redeliver_if_unacked(self, eid: str, payload: dict, attempt: int) -> None:
        await asyncio.sleep(self.ack_deadline)
        fut = self._ack_futures.get(eid)
        if fut is None or fut.done():
            return
        self._problem(f"events_api envelope {eid} (event {payload.get('event_id')}) not acknowledged within "
                      f"{self.ack_deadline}s" + ("; redelivered" if attempt < self.max_retries else "; gave up"))
        if attempt >= self.max_retries or self._current_conn() is None:
            return
        try:
            new_id = await self.send_envelope("events_api", payload, retry_attempt=attempt + 1,
                                              retry_reason="timeout", timeout=1)
            self.redeliveries.append({"of": eid, "envelope_id": new_id, "retry_attempt": attempt + 1})
            self._notify()
        except Exception:
            pass

    async def wait_ack(self, envelope_id: str, timeout: float = 5) -> dict:
        """The client's acknowledgement, e.g. {"envelope_id": ..., "payload": {...}}."""
        fut = self._ack_futures.get(envelope_id)
        if fut is None:
            raise KeyError(f"no envelope {envelope_id} was sent")
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            raise asyncio.TimeoutError(
                f"SlackFake: envelope {envelope_id} not acknowledged within {timeout}s") from None

    async def send_event(self, event: dict, **kw: Any) -> str:
        return await self.send_envelope("events_api", self.events_api(event), **kw)

    async def send_mention(self, text: Optional[str] = None, *, message_first: bool = True,
                           **kw: Any) -> tuple[str, str]:
        """Sends the app_mention and its twin message event; returns (mention_envelope_id, message_envelope_id)."""
        mention, message = self.mention_pair(text, **kw)
        if message_first:
            m_id = await self.send_event(message)
            a_id = await self.send_event(mention)
        else:
            a_id = await self.send_event(mention)
            m_id = await self.send_event(message)
        return a_id, m_id

    async def send_slash_command(self, command: str = "/ask", text: str = "", **kw: Any) -> str:
        return await self.send_envelope("slash_commands", self.slash_commands(command, text, **kw),
                                        accepts_response_payload=True)

    async def send_block_action(self, *args: Any, **kw: Any) -> str:
        return await self.send_envelope("interactive", self.interactive(*args, **kw))

    async def send_disconnect(self, reason: str = "refresh_requested", *, grace: float = 1.0) -> None:
        """Sends {"type": "disconnect"} on every open connection, then closes those the client has not
        closed itself within `grace` seconds. A correct client opens a new connection via
        apps.connections.open."""
        msg = load_fixture("socket_disconnect")
        msg["reason"] = reason
        conns = [c for c in self._conns if not c.closed]
        for c in conns:
            try:
                await c.ws.send_str(json.dumps(msg))
            except ConnectionError:
                pass

        async def close_later() -> None:
            await asyncio.sleep(grace)
            for c in conns:
                if not c.ws.closed:
                    await c.ws.close(code=1000, message=reason.encode())

        self._spawn(close_later())

    async def _handle_ws(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:
            return web.Response(status=401, text="invalid_ticket")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.connections_opened += 1
        conn = _Conn(ws=ws, number=self.connections_opened, opened=time.time(), ticket=ticket)
        self._conns.append(conn)
        hello = load_fixture("socket_hello")
        hello["num_connections"] = self.connection_count
        hello["debug_info"] = dict(hello["debug_info"], host=f"applink-fake-{conn.number}",
                                   approximate_connection_time=18060)
        hello["connection_info"] = {"app_id": self.app_id}
        await ws.send_str(json.dumps(hello))
        self._notify()
        try:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self._on_socket_text(conn, msg.data)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    self._problem("Socket Mode client sent a binary frame")
                elif msg.type == aiohttp.WSMsgType.ERROR:
                    break
        finally:
            conn.closed = True
            self._notify()
        return ws

    def _on_socket_text(self, conn: _Conn, data: str) -> None:
        try:
            msg = json.loads(data)
        except ValueError:
            self._problem(f"Socket Mode client sent non-JSON text: {data[:100]!r}")
            self.socket_messages.append(data)
            return
        self.socket_messages.append(msg)
        conn.received.append(msg)
        eid = msg.get("envelope_id") if isinstance(msg, dict) else None
        if not eid:
            self._problem(f"Socket Mode client sent a message without envelope_id: {data[:100]!r}")
            return
        if eid not in self._ack_futures:
            self._problem(f"ack for unknown envelope {eid}")
            return
        fut = self._ack_futures[eid]
        if fut.done():
            self._problem(f"envelope {eid} acknowledged twice")
            return
        late = time.monotonic() - self._envelope_sent_at.get(eid, time.monotonic())
        if late > self.ack_deadline:
            self._problem(f"envelope {eid} acknowledged after {late:.1f}s (Slack wants 3s)")
        env = next((e for e in self.sent_envelopes if e["envelope_id"] == eid), None)
        if env is not None and "payload" in msg and not env.get("accepts_response_payload"):
            self._problem(f"ack of {env['type']} envelope {eid} carries a payload Slack ignores")
        self.acks.append(msg)
        fut.set_result(msg)
        self._notify()

    # ------------------------------------------------------------------ own events (echoes)

    def _emit_event(self, event: dict) -> None:
        if not self.echo_bot_messages:
            return
        conn = self._current_conn()
        if conn is not None:
            async def go() -> None:
                try:
                    eid = await self.send_envelope("events_api", self.events_api(event))
                    self.echoed_envelopes.append(eid)
                    self._notify()
                except Exception:  # the connection went away: Slack would retry later; we drop it
                    pass

            self._spawn(go())
        elif self.request_url:
            url = self.request_url

            async def post() -> None:
                try:
                    await self.signed_post(url, self.event_callback_body(event), self.JSON)
                except Exception:
                    pass

            self._spawn(post())

    def _message_event_of(self, stored: dict) -> dict:
        ev = self._public(stored)
        ev["channel"] = stored["_channel"]
        ev["event_ts"] = stored["ts"]
        ev["channel_type"] = self.channel_type(stored["_channel"])
        for k in ("reply_count", "reply_users", "reply_users_count", "latest_reply"):
            ev.pop(k, None)
        return ev

    # ------------------------------------------------------------------ Web API plumbing

    async def _parse_params(self, request: web.Request, raw: bytes) -> tuple[dict, Optional[str], str]:
        """Returns (params, token_from_body, kind). Raises SlackApiFailure like Slack would."""
        params: dict = {}
        for k, v in request.query.items():
            params[k] = v
        query_token = params.pop("token", None)
        if query_token:
            self._problem(f"{request.path}: token sent in the query string (refused for apps made after 2021-02-24)")
        body_token: Optional[str] = None
        kind = "query"
        if request.method == "POST" and raw:
            ctype = request.headers.get("Content-Type")
            if not ctype:
                raise SlackApiFailure("missing_post_type")
            mime = ctype.split(";", 1)[0].strip().lower()
            if mime == "application/x-www-form-urlencoded":
                kind = "form"
                try:
                    form = urllib.parse.parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
                except UnicodeDecodeError:
                    raise SlackApiFailure("invalid_form_data")
                for k, v in form:
                    params[k] = v
                body_token = params.pop("token", None)
            elif mime == "multipart/form-data":
                kind = "multipart"
                for name, filename, data in _parse_multipart(ctype, raw):
                    params[name] = data if filename else data.decode("utf-8")
                body_token = params.pop("token", None)
            elif mime == "application/json":
                kind = "json"
                if "charset" not in ctype.lower():
                    params["__warning"] = "missing_charset"
                try:
                    obj = json.loads(raw.decode("utf-8"))
                except ValueError:
                    raise SlackApiFailure("invalid_json")
                if not isinstance(obj, dict):
                    raise SlackApiFailure("invalid_json")
                if "token" in obj:
                    obj.pop("token")
                    self._problem(f"{request.path}: token in a JSON body is ignored by Slack; use Authorization")
                params.update(obj)
            elif mime == "text/plain":
                kind = "text"
            else:
                raise SlackApiFailure("invalid_post_type")
        return params, body_token, kind

    def _token_kind(self, token: Optional[str]) -> str:
        if not token:
            return "none"
        if token == self.bot_token:
            return "bot"
        if token == self.app_token:
            return "app"
        return "invalid"

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        raw = await request.read()
        headers = {k: v for k, v in request.headers.items()}
        call = Call(method=method, params={}, headers=headers, time=time.time(), http_method=request.method,
                    path=request.path_qs, body=raw, content_type=request.headers.get("Content-Type", ""))
        self.calls.append(call)
        try:
            resp_headers: dict = {}
            try:
                parsed = await self._parse_params(request, raw)
                call.params = dict(parsed[0])
            except SlackApiFailure as e:
                parsed = e
            if method in self._rate_limits and self._rate_limits[method]:
                retry_after = self._rate_limits[method].pop(0)
                call.status = 429
                call.response = {"ok": False, "error": "ratelimited"}
                resp_headers["Retry-After"] = str(retry_after)
                return self._json(call.response, status=429, headers=resp_headers)
            try:
                if isinstance(parsed, SlackApiFailure):
                    raise parsed
                params, body_token, kind = parsed
                if kind == "json" and method in FORM_ONLY_METHODS:
                    self._problem(f"{method} does not take a JSON body; Slack ignores its arguments")
                    params = {k: v for k, v in request.query.items() if k != "token"}
                call.params = params
                warning = params.pop("__warning", None)
                handler = (getattr(self, "_api_" + method.replace(".", "_"), None)
                           if _METHOD_RE.match(method) else None)
                if handler is None:
                    raise SlackApiFailure("unknown_method", req_method=method)
                auth = request.headers.get("Authorization", "")
                token: Optional[str] = None
                if auth:
                    if not auth.startswith("Bearer "):
                        raise SlackApiFailure("invalid_auth")
                    token = auth[len("Bearer "):].strip()
                elif body_token:
                    token = body_token
                tk = self._token_kind(token)
                if tk == "none":
                    raise SlackApiFailure("not_authed")
                if tk == "invalid":
                    raise SlackApiFailure("invalid_auth")
                wanted = "app" if method == "apps.connections.open" else "bot"
                if tk != wanted:
                    raise SlackApiFailure("not_allowed_token_type")
                if method in self._holds:
                    self._notify()
                    await self._holds[method].wait()
                if method in self._failures and self._failures[method]:
                    error, extra = self._failures[method].pop(0)
                    raise SlackApiFailure(error, **extra)
                result = handler(params, request)
                if asyncio.iscoroutine(result):
                    result = await result
                body = {"ok": True}
                body.update(result)
                if warning:
                    body["warning"] = warning
                    body.setdefault("response_metadata", {})["warnings"] = [warning]
                call.response = body
                return self._json(body)
            except SlackApiFailure as e:
                body = {"ok": False, "error": e.error}
                body.update(e.extra)
                if e.messages:
                    body["response_metadata"] = {"messages": e.messages}
                call.status = e.status
                call.response = body
                return self._json(body, status=e.status)
            except Exception as e:  # a bug in the fake, not a Slack error: make it loud
                import traceback

                self._problem(f"SlackFake bug in {method}: {e!r}\n{traceback.format_exc()}")
                call.status = 500
                call.response = {"ok": False, "error": "internal_error"}
                return self._json(call.response, status=500)
        finally:
            self._notify()

    @staticmethod
    def _json(body: Any, status: int = 200, headers: Optional[dict] = None) -> web.Response:
        return web.Response(status=status, body=json.dumps(body).encode("utf-8"), headers=headers,
                            content_type="application/json", charset="utf-8")

    @staticmethod
    def _require(params: dict, *names: str, error: str = "invalid_arguments") -> None:
        missing = [n for n in names if params.get(n) in (None, "")]
        if missing:
            raise SlackApiFailure(error, *[f"[ERROR] missing required field: {n}" for n in missing])

    @staticmethod
    def _json_arg(value: Any, name: str, error: str = "invalid_arguments") -> Any:
        if value is None or isinstance(value, (list, dict)):
            return value
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        try:
            return json.loads(value)
        except ValueError:
            raise SlackApiFailure(error, f"[ERROR] failed to parse {name} as JSON")

    def _resolve_channel(self, channel: Any, *, allow_names: bool = True, allow_user: bool = True) -> dict:
        if not channel or not isinstance(channel, str):
            raise SlackApiFailure("channel_not_found")
        if channel in self.channels:
            return self.channels[channel]
        if allow_user and channel[:1] in ("U", "W") and channel in self.users:
            return self.channels[self.im_with(channel)]
        if allow_names:
            name = channel.lstrip("#")
            for ch in self.channels.values():
                if ch["name"] == name:
                    return ch
        raise SlackApiFailure("channel_not_found")

    def _check_postable(self, ch: dict) -> None:
        if ch["is_archived"]:
            raise SlackApiFailure("is_archived")
        if self.bot_user_id not in ch["members"]:
            raise SlackApiFailure("not_in_channel")

    # -------------------------------------------------- blocks validation

    def _validate_text_obj(self, obj: Any, ptr: str, errs: list, *, max_len: int, plain_only: bool = False) -> None:
        if not isinstance(obj, dict):
            errs.append(f"[ERROR] must be an object [json-pointer:{ptr}]")
            return
        t = obj.get("type")
        if t not in ("plain_text", "mrkdwn") or (plain_only and t != "plain_text"):
            wanted = "plain_text" if plain_only else "plain_text or mrkdwn"
            errs.append(f"[ERROR] must be {wanted} [json-pointer:{ptr}/type]")
        text = obj.get("text")
        if not isinstance(text, str) or not text:
            errs.append(f"[ERROR] must be more than 0 characters [json-pointer:{ptr}/text]")
        elif len(text) > max_len:
            errs.append(f"[ERROR] must be less than {max_len + 1} characters [json-pointer:{ptr}/text]")

    def _validate_blocks(self, blocks: Any, *, max_blocks: int, error: str = "invalid_blocks") -> list:
        if isinstance(blocks, (str, bytes)):
            try:
                blocks = json.loads(blocks)
            except ValueError:
                raise SlackApiFailure("invalid_blocks_format", "[ERROR] blocks must be a JSON array")
        if not isinstance(blocks, list):
            raise SlackApiFailure("invalid_blocks_format", "[ERROR] blocks must be a JSON array")
        errs: list = []
        if len(blocks) > max_blocks:
            errs.append(f"[ERROR] no more than {max_blocks} items allowed [json-pointer:/blocks]")
        seen_ids: set = set()
        for i, b in enumerate(blocks):
            ptr = f"/blocks/{i}"
            if not isinstance(b, dict):
                errs.append(f"[ERROR] must be an object [json-pointer:{ptr}]")
                continue
            bt = b.get("type")
            if bt not in KNOWN_BLOCK_TYPES:
                errs.append(f"[ERROR] unsupported type: {bt} [json-pointer:{ptr}/type]")
                continue
            bid = b.get("block_id")
            if bid is not None:
                if not isinstance(bid, str) or len(bid) > 255:
                    errs.append(f"[ERROR] must be a string of at most 255 characters [json-pointer:{ptr}/block_id]")
                elif bid in seen_ids:
                    errs.append(f"[ERROR] duplicate block_id [json-pointer:{ptr}/block_id]")
                seen_ids.add(bid)
            if bt == "section":
                if "text" not in b and "fields" not in b:
                    errs.append(f"[ERROR] must provide either text or fields [json-pointer:{ptr}]")
                if "text" in b:
                    self._validate_text_obj(b["text"], f"{ptr}/text", errs, max_len=MAX_SECTION_TEXT)
                for j, fld in enumerate(b.get("fields", []) or []):
                    self._validate_text_obj(fld, f"{ptr}/fields/{j}", errs, max_len=2000)
                if len(b.get("fields", []) or []) > 10:
                    errs.append(f"[ERROR] no more than 10 items allowed [json-pointer:{ptr}/fields]")
            elif bt == "header":
                self._validate_text_obj(b.get("text"), f"{ptr}/text", errs, max_len=MAX_HEADER_TEXT, plain_only=True)
            elif bt == "context":
                els = b.get("elements")
                if not isinstance(els, list) or not 1 <= len(els) <= 10:
                    errs.append(f"[ERROR] must have 1 to 10 elements [json-pointer:{ptr}/elements]")
            elif bt == "actions":
                els = b.get("elements")
                if not isinstance(els, list) or not 1 <= len(els) <= 25:
                    errs.append(f"[ERROR] must have 1 to 25 elements [json-pointer:{ptr}/elements]")
                    continue
                action_ids: set = set()
                for j, el in enumerate(els):
                    eptr = f"{ptr}/elements/{j}"
                    if not isinstance(el, dict) or "type" not in el:
                        errs.append(f"[ERROR] must be an element object [json-pointer:{eptr}]")
                        continue
                    aid = el.get("action_id")
                    if aid is not None:
                        if aid in action_ids:
                            errs.append(f"[ERROR] duplicate action_id [json-pointer:{eptr}/action_id]")
                        action_ids.add(aid)
                    if el["type"] == "button":
                        self._validate_text_obj(el.get("text"), f"{eptr}/text", errs, max_len=MAX_BUTTON_TEXT,
                                                plain_only=True)
                        if len(str(el.get("value", ""))) > 2000:
                            errs.append(f"[ERROR] must be less than 2001 characters [json-pointer:{eptr}/value]")
            elif bt == "image":
                if not (b.get("image_url") or b.get("slack_file")):
                    errs.append(f"[ERROR] must provide image_url or slack_file [json-pointer:{ptr}]")
                if not b.get("alt_text"):
                    errs.append(f"[ERROR] missing required field: alt_text [json-pointer:{ptr}]")
            elif bt == "markdown":
                if not isinstance(b.get("text"), str) or not b["text"]:
                    errs.append(f"[ERROR] missing required field: text [json-pointer:{ptr}]")
                elif len(b["text"]) > 12000:
                    errs.append(f"[ERROR] must be less than 12001 characters [json-pointer:{ptr}/text]")
            elif bt == "input":
                if "label" not in b or "element" not in b:
                    errs.append(f"[ERROR] missing required field: label/element [json-pointer:{ptr}]")
        if errs:
            raise SlackApiFailure(error, *errs)
        return blocks

    def _message_content(self, params: dict, *, require: bool = True) -> dict:
        """text / blocks / attachments of chat.postMessage and chat.update, validated like Slack."""
        out: dict = {}
        text = params.get("text")
        markdown_text = params.get("markdown_text")
        blocks = params.get("blocks")
        attachments = params.get("attachments")
        if markdown_text not in (None, "") and (text not in (None, "") or blocks not in (None, "", [])):
            raise SlackApiFailure("markdown_text_conflict")
        if blocks not in (None, "", "[]", []):
            out["blocks"] = self._validate_blocks(blocks, max_blocks=MAX_BLOCKS_MESSAGE)
        if attachments not in (None, "", "[]", []):
            att = self._json_arg(attachments, "attachments", error="invalid_attachments")
            if not isinstance(att, list):
                raise SlackApiFailure("invalid_attachments")
            if len(att) > 100:
                raise SlackApiFailure("too_many_attachments")
            out["attachments"] = att
        if text not in (None, ""):
            if not isinstance(text, str):
                text = str(text)
            if len(text) > MAX_TEXT:
                raise SlackApiFailure("msg_too_long")
            out["text"] = text
        if markdown_text not in (None, ""):
            if len(markdown_text) > 12000:
                raise SlackApiFailure("markdown_text_too_long")
            out["text"] = markdown_text
            out["blocks"] = [{"type": "markdown", "text": markdown_text}]
        if require and not any(k in out for k in ("text", "blocks", "attachments")):
            raise SlackApiFailure("no_text")
        out.setdefault("text", "")
        return out

    def _bot_message(self, channel: str, content: dict, ts: Optional[str] = None) -> dict:
        ts = ts or self.new_ts()
        msg = load_fixture("message_from_app")
        for k in ("channel", "event_ts", "channel_type"):
            msg.pop(k, None)
        msg.update({"bot_id": self.bot_id, "user": self.bot_user_id, "ts": ts, "app_id": self.app_id,
                    "team": self.team_id, "blocks": []})
        msg["bot_profile"] = dict(msg["bot_profile"], id=self.bot_id, name=self.bot_name, app_id=self.app_id,
                                  team_id=self.team_id, updated=int(time.time()))
        msg.update(content)
        if not msg.get("blocks"):
            msg.pop("blocks", None)
        return msg

    def _thread_parent(self, ch: dict, thread_ts: Any) -> tuple[Optional[str], bool]:
        """Resolves thread_ts like Slack: malformed -> invalid_thread_ts; a reply's ts -> its thread;
        unknown -> accepted, but the message is lost from view (orphan)."""
        if thread_ts in (None, ""):
            return None, False
        if not isinstance(thread_ts, str):
            thread_ts = str(thread_ts)
        if not _TS_RE.match(thread_ts):
            raise SlackApiFailure("invalid_thread_ts", f"[ERROR] {thread_ts} is not a valid thread_ts")
        parent = self._find_message(ch["id"], thread_ts)
        if parent is None:
            self._problem(f"reply to thread_ts {thread_ts} in {ch['id']}: no such message (Slack accepts it and "
                          f"the reply shows up nowhere)")
            return thread_ts, True
        if parent.get("thread_ts") and parent["thread_ts"] != parent["ts"]:
            self._problem(f"thread_ts {thread_ts} is a reply, not a thread parent; use {parent['thread_ts']}")
            return parent["thread_ts"], False
        return thread_ts, False

    # -------------------------------------------------- Web API methods

    def _api_auth_test(self, params: dict, request: web.Request) -> dict:
        body = load_fixture("auth_test")
        body.pop("ok", None)
        body.update({"url": f"https://{self.team_domain}.slack.com/", "team": self.team_name, "user": self.bot_name,
                     "team_id": self.team_id, "user_id": self.bot_user_id, "bot_id": self.bot_id,
                     "is_enterprise_install": False})
        return body

    def _api_apps_connections_open(self, params: dict, request: web.Request) -> dict:
        if request.method != "POST":
            raise SlackApiFailure("insecure_request")
        self.connections_open_requests += 1
        ticket = str(uuid.uuid4())
        self._tickets[ticket] = time.time()
        app_hash = hashlib.sha1(ticket.encode()).hexdigest()[:20]
        return {"url": f"ws://127.0.0.1:{self.port}/link/?ticket={ticket}&app_id={app_hash}"}

    def _api_chat_postMessage(self, params: dict, request: web.Request) -> dict:
        ch = self._resolve_channel(params.get("channel"))
        self._check_postable(ch)
        content = self._message_content(params)
        thread_ts, orphan = self._thread_parent(ch, params.get("thread_ts"))
        msg = self._bot_message(ch["id"], content)
        if thread_ts:
            msg["thread_ts"] = thread_ts
            parent = self._find_message(ch["id"], thread_ts)
            if parent is not None and parent.get("user"):
                msg["parent_user_id"] = parent["user"]
            if _truthy(params.get("reply_broadcast")):
                msg["subtype"] = "thread_broadcast"
        if params.get("metadata"):
            msg["metadata"] = self._json_arg(params["metadata"], "metadata", error="invalid_metadata_format")
        if orphan:
            msg["_orphan"] = True
            self.orphans.append(self._public(msg) | {"channel": ch["id"]})
            self._messages[ch["id"]].append(dict(msg, _channel=ch["id"]))
        else:
            stored = self._store_message(ch["id"], msg)
            self._emit_event(self._message_event_of(stored))
        return {"channel": ch["id"], "ts": msg["ts"], "message": self._public(msg)}

    def _api_chat_update(self, params: dict, request: web.Request) -> dict:
        channel = params.get("channel")
        if not channel or channel not in self.channels:
            raise SlackApiFailure("channel_not_found")
        ts = params.get("ts")
        if not ts:
            raise SlackApiFailure("message_not_found")
        msg = self._find_message(channel, str(ts))
        if msg is None:
            raise SlackApiFailure("message_not_found")
        if msg.get("bot_id") != self.bot_id:
            raise SlackApiFailure("cant_update_message")
        content = self._message_content(params, require=False)
        if not any(params.get(k) not in (None, "") for k in ("text", "blocks", "attachments", "markdown_text",
                                                              "file_ids", "reply_broadcast", "metadata")):
            raise SlackApiFailure("no_text")
        previous = self._public(msg)
        if "text" in content and (params.get("text") not in (None, "") or params.get("markdown_text")):
            msg["text"] = content["text"]
        if "blocks" in content:
            msg["blocks"] = content["blocks"]
        elif params.get("blocks") in ("[]", []):
            msg.pop("blocks", None)
        if "attachments" in content:
            msg["attachments"] = content["attachments"]
        edit_ts = self.new_ts()
        msg["edited"] = {"user": self.bot_user_id, "ts": edit_ts}
        self._notify()
        ev = load_fixture("message_changed")
        ev.update({"channel": channel, "ts": edit_ts, "event_ts": edit_ts, "channel_type": self.channel_type(channel),
                   "message": self._public(msg), "previous_message": previous})
        self._emit_event(ev)
        return {"channel": channel, "ts": msg["ts"], "text": msg.get("text", ""), "message": self._public(msg)}

    def _api_chat_postEphemeral(self, params: dict, request: web.Request) -> dict:
        ch = self._resolve_channel(params.get("channel"), allow_user=False)
        user = params.get("user")
        if not user:
            raise SlackApiFailure("user_not_found")
        if user not in self.users:
            raise SlackApiFailure("user_not_found")
        self._check_postable(ch)
        if user not in ch["members"]:
            raise SlackApiFailure("user_not_in_channel")
        content = self._message_content(params)
        thread_ts, _ = self._thread_parent(ch, params.get("thread_ts"))
        ts = self.new_ts()
        msg = self._bot_message(ch["id"], content, ts)
        msg.update({"channel": ch["id"], "for_user": user, "thread_ts": thread_ts})
        self.ephemerals.append(msg)
        self._notify()
        return {"message_ts": ts}

    def _api_chat_delete(self, params: dict, request: web.Request) -> dict:
        channel = params.get("channel")
        if not channel or channel not in self.channels:
            raise SlackApiFailure("channel_not_found")
        ts = str(params.get("ts") or "")
        msg = self._find_message(channel, ts)
        if msg is None:
            raise SlackApiFailure("message_not_found")
        if msg.get("bot_id") != self.bot_id:
            raise SlackApiFailure("cant_delete_message")
        self._messages[channel].remove(msg)
        self.deleted.append(self._public(msg) | {"channel": channel})
        self._notify()
        ev_ts = self.new_ts()
        ev = load_fixture("message_deleted")
        ev.update({"channel": channel, "ts": ev_ts, "event_ts": ev_ts, "deleted_ts": ts,
                   "previous_message": self._public(msg), "channel_type": self.channel_type(channel)})
        self._emit_event(ev)
        return {"channel": channel, "ts": ts}

    @staticmethod
    def _page(items: list, params: dict, default_limit: int) -> tuple[list, dict]:
        try:
            limit = int(params.get("limit") or default_limit)
        except (TypeError, ValueError):
            raise SlackApiFailure("invalid_limit")
        limit = max(1, min(limit, 1000))
        start = 0
        cursor = params.get("cursor")
        if cursor:
            try:
                start = int(base64.b64decode(cursor).decode().split(":", 1)[1])
            except Exception:
                raise SlackApiFailure("invalid_cursor")
        page = items[start:start + limit]
        more = start + limit < len(items)
        nxt = base64.b64encode(f"next_ts:{start + limit}".encode()).decode() if more else ""
        return page, {"has_more": more, "response_metadata": {"next_cursor": nxt}}

    @staticmethod
    def _time_filter(msgs: list, params: dict) -> list:
        try:
            oldest = float(params.get("oldest") or 0)
            latest = float(params.get("latest") or 1e12)
        except (TypeError, ValueError):
            raise SlackApiFailure("invalid_ts_oldest")
        if _truthy(params.get("inclusive")):
            return [m for m in msgs if oldest <= float(m["ts"]) <= latest]
        return [m for m in msgs if oldest < float(m["ts"]) < latest]

    def _api_conversations_replies(self, params: dict, request: web.Request) -> dict:
        channel = params.get("channel")
        if not channel or channel not in self.channels:
            raise SlackApiFailure("channel_not_found")
        ts = params.get("ts")
        if not ts:
            raise SlackApiFailure("invalid_arguments", "[ERROR] missing required field: ts")
        msg = self._find_message(channel, str(ts))
        if msg is None:
            raise SlackApiFailure("thread_not_found")
        root = msg.get("thread_ts") or msg["ts"]
        thread = self.messages(channel, root)
        thread = self._time_filter(thread, params) if (params.get("oldest") or params.get("latest")) else thread
        page, meta = self._page(thread, params, 1000)
        return {"messages": page, **meta}

    def _api_conversations_history(self, params: dict, request: web.Request) -> dict:
        channel = params.get("channel")
        if not channel or channel not in self.channels:
            raise SlackApiFailure("channel_not_found")
        if self.bot_user_id not in self.channels[channel]["members"]:
            raise SlackApiFailure("not_in_channel")
        msgs = list(reversed(self.messages(channel, top_level_only=True)))
        if params.get("oldest") or params.get("latest"):
            msgs = self._time_filter(msgs, params)
        page, meta = self._page(msgs, params, 100)
        return {"messages": page, "pin_count": 0, "channel_actions_ts": None, "channel_actions_count": 0, **meta}

    def _api_conversations_info(self, params: dict, request: web.Request) -> dict:
        channel = params.get("channel")
        if not channel or channel not in self.channels:
            raise SlackApiFailure("channel_not_found")
        ch = self.channels[channel]
        info = {k: v for k, v in ch.items() if k != "members"}
        info["is_member"] = self.bot_user_id in ch["members"]
        if ch["is_im"]:
            info.pop("name", None)
        return {"channel": info}

    def add_usergroup(self, group_id: str, members: list[str]) -> None:
        self.usergroups[group_id] = list(members)

    def _api_usergroups_users_list(self, params: dict, request: web.Request) -> dict:
        # https://api.slack.com/methods/usergroups.users.list
        group = params.get("usergroup")
        if not group:
            raise SlackApiFailure("invalid_arguments", "[ERROR] missing required field: usergroup")
        if group not in self.usergroups:
            raise SlackApiFailure("no_such_subteam")
        return {"users": list(self.usergroups[group])}

    def _api_users_info(self, params: dict, request: web.Request) -> dict:
        user = params.get("user")
        if not user or user not in self.users:
            raise SlackApiFailure("user_not_found")
        return {"user": copy.deepcopy(self.users[user])}

    def _api_files_info(self, params: dict, request: web.Request) -> dict:
        fid = params.get("file")
        if not fid or fid not in self.files:
            raise SlackApiFailure("file_not_found")
        return {"file": copy.deepcopy(self.files[fid]), "comments": [], "response_metadata": {"next_cursor": ""}}

    def _api_files_getUploadURLExternal(self, params: dict, request: web.Request) -> dict:
        filename = params.get("filename")
        length = params.get("length")
        if not filename:
            raise SlackApiFailure("invalid_arguments", "[ERROR] missing required field: filename")
        try:
            n = int(length)
        except (TypeError, ValueError):
            raise SlackApiFailure("invalid_arguments", "[ERROR] missing required field: length")
        if n <= 0:
            raise SlackApiFailure("missing_argument")
        alt = params.get("alt_txt")
        if alt and len(alt) > 1000:
            raise SlackApiFailure("alt_txt_too_large")
        file_id = _rand_id("F")
        key = secrets.token_urlsafe(24)
        self.uploads[key] = {"file_id": file_id, "filename": filename, "length": n, "alt_txt": alt,
                             "snippet_type": params.get("snippet_type"), "data": None, "completed": False}
        return {"upload_url": f"{self.base_url}upload/v1/{key}", "file_id": file_id}

    async def _handle_upload(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info["key"]
        raw = await request.read()
        call = Call(method="upload", params={}, headers=dict(request.headers), time=time.time(),
                    http_method="POST", path=request.path_qs, body=raw,
                    content_type=request.headers.get("Content-Type", ""))
        self.calls.append(call)
        try:
            up = self.uploads.get(key)
            if up is None or up["completed"]:
                call.status = 404
                call.response = "not found"
                return web.Response(status=404, text="not found")
            data = raw
            ctype = request.headers.get("Content-Type", "")
            if ctype.lower().startswith("multipart/form-data"):
                parts = _parse_multipart(ctype, raw)
                with_file = [p for p in parts if p[1]] or [p for p in parts if p[0] in ("file", "filename")]
                data = with_file[0][2] if with_file else b""
            up["data"] = bytes(data)
            call.params = {"file_id": up["file_id"], "size": len(data)}
            if len(data) != up["length"]:
                self._problem(f"upload of {up['filename']}: {len(data)} bytes sent, {up['length']} announced")
            call.response = f"OK - {len(data)}"
            return web.Response(status=200, text=f"OK - {len(data)}", content_type="text/plain")
        finally:
            self._notify()

    def _api_files_completeUploadExternal(self, params: dict, request: web.Request) -> dict:
        files = self._json_arg(params.get("files"), "files")
        if not isinstance(files, list) or not files:
            raise SlackApiFailure("invalid_arguments", "[ERROR] missing required field: files")
        channel_ids: list = []
        if params.get("channel_id"):
            channel_ids.append(params["channel_id"])
        if params.get("channels"):
            channel_ids.extend(c for c in str(params["channels"]).split(",") if c)
        thread_ts = params.get("thread_ts")
        if thread_ts and len(channel_ids) != 1:
            raise SlackApiFailure("invalid_arguments", "[ERROR] thread_ts needs exactly one channel")
        chans = []
        for cid in channel_ids:
            ch = self.channels.get(cid)
            if ch is None and cid in self.users:
                ch = self.channels[self.im_with(cid)]
            if ch is None:
                raise SlackApiFailure("invalid_channel")
            if self.bot_user_id not in ch["members"] or ch["is_archived"]:
                raise SlackApiFailure("posting_to_channel_denied")
            chans.append(ch)
        pending = []
        for f in files:
            if not isinstance(f, dict) or not f.get("id"):
                raise SlackApiFailure("invalid_arguments", "[ERROR] each file needs an id")
            up = next((u for u in self.uploads.values() if u["file_id"] == f["id"]), None)
            if up is None or up["data"] is None or up["completed"]:
                raise SlackApiFailure("file_not_found")
            pending.append((f, up))
        out = []
        for f, up in pending:
            up["completed"] = True
            mimetype = mimetypes.guess_type(up["filename"])[0] or "application/octet-stream"
            obj = self.add_file(up["data"], up["filename"], mimetype, id=up["file_id"], user=self.bot_user_id,
                                title=f.get("title") or up["filename"], is_public=bool(chans) and all(
                                    not c["is_private"] for c in chans))
            obj.update({"shares": {}, "channels": [], "groups": [], "ims": [], "comments_count": 0})
            if up.get("alt_txt"):
                obj["alt_txt"] = up["alt_txt"]
            self.files[up["file_id"]].update({"shares": {}, "channels": [], "groups": [], "ims": []})
            out.append(obj)
        if chans:
            file_ids = [o["id"] for o in out]
            initial_comment = params.get("initial_comment") or ""
            blocks = params.get("blocks") if not initial_comment else None
            tts = None
            if thread_ts:
                tts, orphan = self._thread_parent(chans[0], thread_ts)
                if orphan:
                    tts = str(thread_ts)

            async def share_later() -> None:
                await asyncio.sleep(self.share_delay)
                for ch in chans:
                    self._share_files(ch, file_ids, initial_comment, tts, blocks)

            self._spawn(share_later())
        return {"files": out}

    def _share_files(self, ch: dict, file_ids: list, initial_comment: str, thread_ts: Optional[str],
                     blocks: Any) -> None:
        ts = self.new_ts()
        files = []
        for fid in file_ids:
            f = self.files[fid]
            key = "private" if ch["is_private"] else "public"
            share = {"reply_users": [], "reply_users_count": 0, "reply_count": 0, "ts": ts,
                     "channel_name": ch["name"] or "", "team_id": self.team_id, "share_user_id": self.bot_user_id,
                     "source": "UNKNOWN"}
            if thread_ts:
                share["thread_ts"] = thread_ts
            f.setdefault("shares", {}).setdefault(key, {}).setdefault(ch["id"], []).append(share)
            bucket = "ims" if ch["is_im"] else ("groups" if ch["is_private"] else "channels")
            f.setdefault(bucket, []).append(ch["id"])
            files.append(copy.deepcopy({k: v for k, v in f.items()
                                        if k not in ("shares", "channels", "groups", "ims")}))
        content: dict = {"text": initial_comment, "files": files, "upload": True, "display_as_bot": False}
        if blocks:
            try:
                content["blocks"] = self._json_arg(blocks, "blocks")
            except SlackApiFailure:
                pass
        msg = self._bot_message(ch["id"], content, ts)
        if thread_ts:
            msg["thread_ts"] = thread_ts
        if thread_ts and self._find_message(ch["id"], thread_ts) is None:
            msg["_orphan"] = True
            self.orphans.append(self._public(msg) | {"channel": ch["id"]})
            self._messages[ch["id"]].append(dict(msg, _channel=ch["id"]))
            self._notify()
            return
        stored = self._store_message(ch["id"], msg)
        ev = self._message_event_of(stored)
        ev["subtype"] = "file_share"
        self._emit_event(ev)

    def _api_views_open(self, params: dict, request: web.Request) -> dict:
        trig = params.get("trigger_id")
        if not trig and not params.get("interactivity_pointer"):
            raise SlackApiFailure("invalid_arguments", "[ERROR] missing required field: trigger_id")
        t = self._triggers.get(trig) if trig else None
        if t is None:
            raise SlackApiFailure("invalid_arguments", "invalid `trigger_id`")
        if t["used"]:
            raise SlackApiFailure("exchanged_trigger_id")
        if time.monotonic() - t["created"] > self.trigger_ttl:
            raise SlackApiFailure("expired_trigger_id")
        view = self._json_arg(params.get("view"), "view")
        if not isinstance(view, dict):
            raise SlackApiFailure("invalid_arguments", "[ERROR] missing required field: view")
        errs = []
        if view.get("type") not in ("modal",):
            errs.append("[ERROR] must be modal [json-pointer:/view/type]")
        title = view.get("title")
        if not isinstance(title, dict) or title.get("type") != "plain_text" or not title.get("text"):
            errs.append("[ERROR] missing required field: title [json-pointer:/view/title]")
        elif len(title["text"]) > MAX_VIEW_TITLE:
            errs.append(f"[ERROR] must be less than {MAX_VIEW_TITLE + 1} characters [json-pointer:/view/title/text]")
        for k in ("submit", "close"):
            if k in view and (not isinstance(view[k], dict) or len(view[k].get("text", "")) > MAX_VIEW_TITLE):
                errs.append(f"[ERROR] must be less than {MAX_VIEW_TITLE + 1} characters [json-pointer:/view/{k}/text]")
        blocks = view.get("blocks")
        if not isinstance(blocks, list):
            errs.append("[ERROR] missing required field: blocks [json-pointer:/view/blocks]")
        else:
            try:
                self._validate_blocks(blocks, max_blocks=MAX_BLOCKS_VIEW, error="invalid_arguments")
            except SlackApiFailure as e:
                errs.extend(e.messages)
            if any(isinstance(b, dict) and b.get("type") == "input" for b in blocks) and "submit" not in view:
                errs.append("[ERROR] submit is required when an input block is present [json-pointer:/view/submit]")
        if len(json.dumps(view)) > 250_000:
            raise SlackApiFailure("view_too_large")
        if errs:
            raise SlackApiFailure("invalid_arguments", *errs)
        t["used"] = True
        vid = _rand_id("V")
        full = dict(view)
        full.update({"id": vid, "team_id": self.team_id, "state": {"values": {}},
                     "hash": f"{int(time.time())}.{secrets.token_hex(4)}",
                     "previous_view_id": None, "root_view_id": vid, "app_id": self.app_id, "bot_id": self.bot_id,
                     "private_metadata": view.get("private_metadata", ""), "callback_id": view.get("callback_id", ""),
                     "external_id": view.get("external_id", ""), "clear_on_close": bool(view.get("clear_on_close")),
                     "notify_on_close": bool(view.get("notify_on_close"))})
        self.views.append({"user": t["user"], "trigger_id": trig, "view": full})
        return {"view": full}

    def _api_reactions_add(self, params: dict, request: web.Request) -> dict:
        channel = params.get("channel")
        ts = params.get("timestamp")
        name = params.get("name")
        if not channel or not ts:
            raise SlackApiFailure("no_item_specified")
        if channel not in self.channels:
            raise SlackApiFailure("channel_not_found")
        if not name or not _EMOJI_RE.match(str(name)):
            raise SlackApiFailure("invalid_name")
        if self.bot_user_id not in self.channels[channel]["members"]:
            raise SlackApiFailure("not_in_channel")
        msg = self._find_message(channel, str(ts))
        if msg is None:
            raise SlackApiFailure("message_not_found")
        reactions = msg.setdefault("reactions", [])
        r = next((r for r in reactions if r["name"] == name), None)
        if r is None:
            r = {"name": name, "users": [], "count": 0}
            reactions.append(r)
        if self.bot_user_id in r["users"]:
            raise SlackApiFailure("already_reacted")
        r["users"].append(self.bot_user_id)
        r["count"] += 1
        self._notify()
        return {}

    # ------------------------------------------------------------------ file download

    async def _handle_file_download(self, request: web.Request) -> web.StreamResponse:
        tf = request.match_info["tf"]
        fid = tf.split("-", 1)[1] if "-" in tf else tf
        auth = request.headers.get("Authorization", "")
        token = auth[len("Bearer "):].strip() if auth.startswith("Bearer ") else None
        authed = token == self.bot_token
        call = Call(method="files.download", params={"file": fid, "authed": authed, "name": request.match_info["name"]},
                    headers=dict(request.headers), time=time.time(), http_method="GET", path=request.path_qs)
        self.calls.append(call)
        try:
            if not authed:
                # What Slack does: no error status, an HTML sign-in page with 200.
                if token is None:
                    self._problem(f"download of {fid} without Authorization: got the HTML login page")
                else:
                    self._problem(f"download of {fid} with a token that is not the bot token: got the login page")
                call.response = "login page"
                return web.Response(status=200, text=_LOGIN_PAGE, content_type="text/html", charset="utf-8")
            if self._download_redirects.get(fid):
                call.status = 302
                call.response = "redirect"
                raise web.HTTPFound(self._download_redirects[fid].pop(0))
            if fid not in self.file_contents:
                call.status = 404
                call.response = "not found"
                return web.Response(status=404, text="File not found", content_type="text/html")
            f = self.files[fid]
            data = self.file_contents[fid]
            name = request.match_info["name"]
            ctype = f.get("mimetype") or "application/octet-stream"
            if name == "file.aac":
                ctype = "audio/aac"
            elif name == "file.vtt":
                ctype = "text/vtt"
                data = b"WEBVTT\n\n00:00.000 --> 00:01.000\n" + (
                    f.get("transcription", {}).get("preview", {}).get("content", "").encode("utf-8"))
            call.response = {"bytes": len(data)}
            headers = {"Cache-Control": "private, no-cache"}
            if "/download/" in request.path:
                headers["Content-Disposition"] = f'attachment; filename="{f["name"]}"'
            return web.Response(status=200, body=data, content_type=ctype, headers=headers)
        finally:
            self._notify()

    # ------------------------------------------------------------------ response_url

    async def _handle_response_url(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        path = request.path
        call = Call(method="response_url", params={}, headers=dict(request.headers), time=time.time(),
                    http_method="POST", path=path, body=raw, content_type=request.headers.get("Content-Type", ""))
        self.calls.append(call)
        try:
            meta = self._response_urls.get(path)
            if meta is None:
                call.status = 404
                call.response = "invalid_url"
                return web.Response(status=404, text="invalid_url")
            if time.time() - meta["created"] > 30 * 60:
                call.status = 404
                call.response = "expired_url"
                return web.Response(status=404, text="expired_url")
            meta["uses"] += 1
            if meta["uses"] > RESPONSE_URL_MAX_USES:
                call.status = 404
                call.response = "used_url"
                return web.Response(status=404, text="used_url")
            try:
                payload = json.loads(raw.decode("utf-8"))
                if not isinstance(payload, dict):
                    raise ValueError
            except ValueError:
                call.status = 400
                call.response = "invalid_payload"
                return web.Response(status=400, text="invalid_payload")
            call.params = payload
            entry = {"url": str(request.url), "path": path, "kind": meta["kind"], "json": payload,
                     "time": time.time(), "channel": meta["channel"]}
            self.response_url_posts.append(entry)
            channel = meta["channel"]
            try:
                if payload.get("delete_original") and meta.get("message_ts"):
                    m = self._find_message(channel, meta["message_ts"])
                    if m is not None:
                        self._messages[channel].remove(m)
                        self.deleted.append(self._public(m) | {"channel": channel})
                elif payload.get("replace_original") and meta.get("message_ts"):
                    m = self._find_message(channel, meta["message_ts"])
                    if m is not None:
                        content = self._message_content(payload)
                        m.update({k: v for k, v in content.items()})
                        m["edited"] = {"user": self.bot_user_id, "ts": self.new_ts()}
                elif payload.get("response_type") == "in_channel" and channel in self.channels:
                    content = self._message_content(payload)
                    msg = self._bot_message(channel, content)
                    tts = payload.get("thread_ts")
                    if tts:
                        msg["thread_ts"] = tts
                    self._store_message(channel, msg)
                else:
                    content = self._message_content(payload)
                    self.ephemerals.append(self._bot_message(channel, content) | {"channel": channel,
                                                                                   "via": "response_url"})
            except SlackApiFailure as e:
                call.status = 400
                call.response = e.error
                return web.Response(status=400, text=e.error)
            call.response = "ok"
            return web.Response(status=200, text="ok", content_type="text/html")
        finally:
            self._notify()


def _parse_multipart(content_type: str, raw: bytes) -> list[tuple[str, Optional[str], bytes]]:
    """(name, filename, bytes) of each part of a multipart/form-data body."""
    import email.parser
    import email.policy

    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\nMIME-Version: 1.0\r\n\r\n" + raw)
    out = []
    if not msg.is_multipart():
        raise SlackApiFailure("invalid_form_data")
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        filename = part.get_param("filename", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        out.append((str(name or ""), str(filename) if filename else None, payload))
    return out
