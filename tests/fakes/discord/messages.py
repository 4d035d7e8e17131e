"""A loopback fake of Discord (REST API v10, attachment CDN and gateway) for tests.

The real ``discord.py`` client is pointed at it with :func:`point_discord_py_at`; nothing
of Confab is mocked.  The fake is meant to be as strict as Discord, never kinder:

* REST needs ``Authorization: Bot <token>`` and a ``DiscordBot`` User-Agent, answers JSON
  with a content type of exactly ``application/json`` and Discord's JSON error codes
  (50035 invalid form body, 50006 empty message, 10008 unknown message, 40060 already
  acknowledged, 5015x voice-message rules, ...), and sends rate-limit headers on every
  answer.  A client that ignores them gets a real 429 (with ``Via`` and ``Retry-After``,
  as discord.py requires to tell it from a Cloudflare ban).
* Attachment URLs are signed (``ex``/``is``/``hm``) as on Discord's CDN: a URL whose query
  was stripped or altered is refused.
* The gateway speaks op 10/2/0/1/11/6/7/9, numbers dispatches per session, buffers them
  while the client is away and replays them on RESUME, compresses with ``zlib-stream``
  (or ``zstd-stream``) when asked, applies intents (an event the client did not ask for
  is not sent; without MESSAGE_CONTENT, message content is blanked as Discord does), and
  echoes the bot's own messages back as MESSAGE_CREATE / MESSAGE_UPDATE / MESSAGE_DELETE.
* Interactions must be acknowledged once, within ``interaction_ack_deadline`` seconds of
  their dispatch (3 s, as on Discord); follow-ups need an acknowledged interaction.

Payload builders (``message_create_*``, ``interaction_*``) produce the shapes documented in
Discord's API reference; ``tests/fixtures/discord/*.json`` holds one example of each with
a ``_source`` note, and the self-test checks that the builders still match them.

Where this module had to choose a behaviour Discord does not document (an exact error
code, a bucket size) it says so in a comment.

Usage::

    fake = DiscordFake()
    await fake.start()
    with point_discord_py_at(fake):          # for the whole life of the client
        task = asyncio.create_task(client.start(fake.token))
        await fake.wait_for_identify()
        await fake.dispatch("MESSAGE_CREATE", fake.message_create_mention("hello"))
        reply = await fake.wait_for("POST", f"/channels/{fake.channel_id}/messages")
        await client.close()
    await fake.stop()

discord.py waits ``guild_ready_timeout`` (2 s by default) after the last GUILD_CREATE
before ``on_ready``, and sleeps 5 s before every IDENTIFY but the first; pass
``guild_ready_timeout=0.1`` to the client in tests.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime
import hashlib
import hmac
import inspect
import json
import math
import mimetypes
import re
import secrets
import struct
import time
import uuid
import zlib
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import yarl
from aiohttp import WSCloseCode, WSMsgType, web

__all__ = [
    "DiscordFake",
    "DiscordFakeTimeout",
    "RecordedFile",
    "RecordedRequest",
    "check_discord_py_internals",
    "point_discord_py_at",
    "Intents",
    "MessageFlags",
    "ErrorCode",
]

DISCORD_EPOCH_MS = 1420070400000
API_VERSION = 10
MAX_CONTENT = 2000
MAX_GATEWAY_PAYLOAD = 4096
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024  # bytes; Discord's default for bots since 2024


class Intents:
    """Gateway intent bits (https://discord.com/developers/docs/events/gateway#gateway-intents)."""

    GUILDS = 1 << 0
    GUILD_MEMBERS = 1 << 1  # privileged
    GUILD_MODERATION = 1 << 2
    GUILD_EXPRESSIONS = 1 << 3
    GUILD_INTEGRATIONS = 1 << 4
    GUILD_WEBHOOKS = 1 << 5
    GUILD_INVITES = 1 << 6
    GUILD_VOICE_STATES = 1 << 7
    GUILD_PRESENCES = 1 << 8  # privileged
    GUILD_MESSAGES = 1 << 9
    GUILD_MESSAGE_REACTIONS = 1 << 10
    GUILD_MESSAGE_TYPING = 1 << 11
    DIRECT_MESSAGES = 1 << 12
    DIRECT_MESSAGE_REACTIONS = 1 << 13
    DIRECT_MESSAGE_TYPING = 1 << 14
    MESSAGE_CONTENT = 1 << 15  # privileged
    GUILD_SCHEDULED_EVENTS = 1 << 16
    AUTO_MODERATION_CONFIGURATION = 1 << 20
    AUTO_MODERATION_EXECUTION = 1 << 21
    GUILD_MESSAGE_POLLS = 1 << 24
    DIRECT_MESSAGE_POLLS = 1 << 25
    PRIVILEGED = GUILD_MEMBERS | GUILD_PRESENCES | MESSAGE_CONTENT
    ALL = (1 << 26) - 1 - (1 << 17) - (1 << 18) - (1 << 19) - (1 << 22) - (1 << 23)


class MessageFlags:
    """https://discord.com/developers/docs/resources/message#message-object-message-flags"""

    CROSSPOSTED = 1 << 0
    SUPPRESS_EMBEDS = 1 << 2
    EPHEMERAL = 1 << 6
    LOADING = 1 << 7
    SUPPRESS_NOTIFICATIONS = 1 << 12
    IS_VOICE_MESSAGE = 1 << 13
    IS_COMPONENTS_V2 = 1 << 15


class ErrorCode:
    """https://discord.com/developers/docs/topics/opcodes-and-status-codes#json-json-error-codes"""

    GENERAL = 0
    UNKNOWN_APPLICATION = 10002
    UNKNOWN_CHANNEL = 10003
    UNKNOWN_GUILD = 10004
    UNKNOWN_MEMBER = 10007
    UNKNOWN_MESSAGE = 10008
    UNKNOWN_USER = 10013
    UNKNOWN_WEBHOOK = 10015
    UNKNOWN_INTERACTION = 10062
    UNKNOWN_APPLICATION_COMMAND = 10063
    REQUEST_ENTITY_TOO_LARGE = 40005
    INTERACTION_ALREADY_ACKNOWLEDGED = 40060
    MISSING_ACCESS = 50001
    CANNOT_EXECUTE_ON_DM = 50003
    CANNOT_EDIT_OTHERS_MESSAGE = 50005
    EMPTY_MESSAGE = 50006
    MISSING_PERMISSIONS = 50013
    INVALID_CHANNEL_TYPE = 50024
    INVALID_FORM_BODY = 50035
    INVALID_JSON = 50109
    UPLOADED_FILE_NOT_FOUND = 50146
    VOICE_MESSAGE_ADDITIONAL_CONTENT = 50159
    VOICE_MESSAGE_SINGLE_AUDIO_ATTACHMENT = 50160
    VOICE_MESSAGE_METADATA = 50161
    VOICE_MESSAGE_CANNOT_BE_EDITED = 50162
    THREAD_ALREADY_CREATED = 160004


# Gateway opcodes (https://discord.com/developers/docs/topics/opcodes-and-status-codes#gateway)
OP_DISPATCH, OP_HEARTBEAT, OP_IDENTIFY, OP_PRESENCE = 0, 1, 2, 3
OP_VOICE_STATE, OP_RESUME, OP_RECONNECT, OP_REQUEST_MEMBERS = 4, 6, 7, 8
OP_INVALID_SESSION, OP_HELLO, OP_HEARTBEAT_ACK, OP_REQUEST_SOUNDBOARD = 9, 10, 11, 31

# Gateway close codes.
CLOSE_UNKNOWN_ERROR, CLOSE_UNKNOWN_OPCODE, CLOSE_DECODE_ERROR = 4000, 4001, 4002
CLOSE_NOT_AUTHENTICATED, CLOSE_AUTHENTICATION_FAILED, CLOSE_ALREADY_AUTHENTICATED = 4003, 4004, 4005
CLOSE_INVALID_SEQ, CLOSE_INVALID_API_VERSION = 4007, 4012
CLOSE_INVALID_INTENTS, CLOSE_DISALLOWED_INTENTS = 4013, 4014

# Permission bits used for the bot's role and app_permissions.
_P_ADD_REACTIONS = 1 << 6
_P_ADMINISTRATOR = 1 << 3
_P_MENTION_EVERYONE = 1 << 17
_P_VIEW_CHANNEL = 1 << 10
_P_SEND_MESSAGES = 1 << 11
_P_EMBED_LINKS = 1 << 14
_P_ATTACH_FILES = 1 << 15
_P_READ_HISTORY = 1 << 16
_P_USE_APP_COMMANDS = 1 << 31
_P_CREATE_PUBLIC_THREADS = 1 << 35
_P_SEND_IN_THREADS = 1 << 38
_P_SEND_VOICE_MESSAGES = 1 << 46
BOT_PERMISSIONS = (
    _P_ADD_REACTIONS | _P_VIEW_CHANNEL | _P_SEND_MESSAGES | _P_EMBED_LINKS | _P_ATTACH_FILES
    | _P_READ_HISTORY | _P_USE_APP_COMMANDS | _P_CREATE_PUBLIC_THREADS | _P_SEND_IN_THREADS
    | _P_SEND_VOICE_MESSAGES
)
EVERYONE_PERMISSIONS = (
    _P_ADD_REACTIONS | _P_VIEW_CHANNEL | _P_SEND_MESSAGES | _P_EMBED_LINKS | _P_ATTACH_FILES
    | _P_READ_HISTORY | _P_USE_APP_COMMANDS | _P_CREATE_PUBLIC_THREADS | _P_SEND_IN_THREADS
    | _P_SEND_VOICE_MESSAGES
)

# Rate-limit buckets: (method, route template) -> (limit, per seconds).  Discord does not
# publish per-route numbers; these are the values its headers show for the common routes
# (message create/edit: 5 per 5 s per channel).  Anything else falls back to "default".
DEFAULT_BUCKETS: Dict[str, Tuple[int, float]] = {
    "POST /channels/{channel_id}/messages": (5, 5.0),
    "PATCH /channels/{channel_id}/messages/{message_id}": (5, 5.0),
    "DELETE /channels/{channel_id}/messages/{message_id}": (5, 1.0),
    "POST /webhooks/{webhook_id}/{webhook_token}": (5, 2.0),
    "PATCH /webhooks/{webhook_id}/{webhook_token}/messages/{message_id}": (5, 2.0),
    "default": (50, 1.0),
}


class DiscordFakeTimeout(AssertionError):
    """A bounded wait on the fake ran out of time."""


@dataclasses.dataclass
class RecordedFile:
    field: str  # e.g. "files[0]"
    filename: Optional[str]
    content_type: Optional[str]  # as sent by the client (discord.py sends application/octet-stream)
    data: bytes


@dataclasses.dataclass
class RecordedRequest:
    index: int
    method: str
    path: str  # full path, e.g. "/api/v10/channels/1/messages"
    query: Dict[str, str]
    headers: Dict[str, str]
    json: Any = None  # the JSON body, or the parsed payload_json of a multipart body
    files: List[RecordedFile] = dataclasses.field(default_factory=list)
    raw: bytes = b""  # raw body for non-JSON, non-multipart requests (e.g. uploads)
    status: Optional[int] = None
    response: Any = None
    at: float = dataclasses.field(default_factory=time.monotonic)  # when the request arrived

    def __repr__(self) -> str:  # short, for failure messages
        return f"<{self.method} {self.path} -> {self.status}>"


class _HTTPError(Exception):
    def __init__(self, status: int, body: Any, headers: Optional[Dict[str, str]] = None) -> None:
        super().__init__(status, body)
        self.status, self.body, self.headers = status, body, headers or {}


def _error(status: int, code: int, message: str, errors: Optional[dict] = None) -> _HTTPError:
    body: Dict[str, Any] = {"message": message, "code": code}
    if errors is not None:
        body["errors"] = errors
    return _HTTPError(status, body)


def _form_error(path: List[Union[str, int]], code: str, message: str) -> _HTTPError:
    """400 / 50035 with Discord's nested ``errors`` object pointing at ``path``."""
    errors: Dict[str, Any] = {"_errors": [{"code": code, "message": message}]}
    for key in reversed(path):
        errors = {str(key): errors}
    return _error(400, ErrorCode.INVALID_FORM_BODY, "Invalid Form Body", errors)


def _json_response(data: Any, status: int = 200, headers: Optional[Dict[str, str]] = None) -> web.Response:
    # Content-Type exactly "application/json": discord.py's json_or_text() compares the whole
    # header, and aiohttp's json_response() would append "; charset=utf-8".
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    return web.Response(status=status, body=json.dumps(data, separators=(",", ":")).encode(), headers=h)


def _iso(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).isoformat(timespec="microseconds")


def _snowflake_ms(snowflake: Union[int, str]) -> int:
    return (int(snowflake) >> 22) + DISCORD_EPOCH_MS


def _image_size(data: bytes) -> Optional[Tuple[int, int]]:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data[:2] == b"\xff\xd8":  # JPEG: walk the segments to a SOFn marker
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                return None
            marker, length = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
            if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
                h, w = struct.unpack(">HH", data[i + 5:i + 9])
                return w, h
            i += 2 + length
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and data[12:16] == b"VP8X" and len(data) >= 30:
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return w, h
    return None


def _guess_content_type(filename: str) -> str:
    ctype, _ = mimetypes.guess_type(filename)
    if filename.lower().endswith(".ogg"):
        ctype = "audio/ogg"
    return ctype or "application/octet-stream"


def _shape(value: Any) -> Any:
    """The key structure of a JSON value (used to compare builders with fixtures)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items() if k not in ("_source", "_note")}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return type(value).__name__ if value is not None else None


# ---------------------------------------------------------------------------------------
# Pointing discord.py at the fake
# ---------------------------------------------------------------------------------------


def check_discord_py_internals() -> None:
    """Fail loudly if the discord.py internals the fake relies on have moved.

    ``discord.http.Route.BASE`` (every REST and webhook URL is built from it) and
    ``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY`` (where the client connects, and
    where it goes back to after a non-resumable INVALID_SESSION) are internals.
    """
    import discord
    import discord.gateway
    import discord.http
    import discord.webhook.async_ as webhook_async

    problems: List[str] = []
    route = getattr(discord.http, "Route", None)
    if route is None:
        problems.append("discord.http.Route is gone")
    else:
        base = getattr(route, "BASE", None)
        if not isinstance(base, str) or not base.startswith("http"):
            problems.append(f"discord.http.Route.BASE is not a URL string: {base!r}")
        else:
            saved = route.BASE
            try:
                route.BASE = "http://127.0.0.1:9/api/v10"
                url = route("GET", "/users/@me").url
                if url != "http://127.0.0.1:9/api/v10/users/@me":
                    problems.append(f"Route no longer builds its URL from Route.BASE (got {url!r})")
            finally:
                route.BASE = saved
    if getattr(webhook_async, "Route", None) is not route:
        problems.append("discord.webhook.async_ no longer uses discord.http.Route (interaction callbacks would escape)")
    ws_cls = getattr(discord.gateway, "DiscordWebSocket", None)
    if ws_cls is None:
        problems.append("discord.gateway.DiscordWebSocket is gone")
    else:
        gw = getattr(ws_cls, "DEFAULT_GATEWAY", None)
        if not isinstance(gw, yarl.URL):
            problems.append(f"DiscordWebSocket.DEFAULT_GATEWAY is not a yarl.URL: {gw!r}")
        try:
            src = inspect.getsource(ws_cls.from_client)
            if "DEFAULT_GATEWAY" not in src:
                problems.append("DiscordWebSocket.from_client no longer reads DEFAULT_GATEWAY")
            src = inspect.getsource(ws_cls.received_message)
            if "resume_gateway_url" not in src:
                problems.append("DiscordWebSocket no longer takes resume_gateway_url from READY")
        except (OSError, TypeError) as exc:  # pragma: no cover - source not available
            problems.append(f"cannot inspect discord.gateway source: {exc}")
    utils = discord.utils
    ctx = getattr(utils, "_ActiveDecompressionContext", None)
    if ctx is None or getattr(ctx, "COMPRESSION_TYPE", None) not in ("zlib-stream", "zstd-stream"):
        problems.append("discord.utils._ActiveDecompressionContext / COMPRESSION_TYPE changed")
    if problems:
        raise AssertionError(
            f"discord.py {discord.__version__} internals used by tests/fakes/discord_fake.py moved:\n  - "
            + "\n  - ".join(problems)
        )


@contextlib.contextmanager
def point_discord_py_at(fake: "DiscordFake") -> Iterator["DiscordFake"]:
    """Point discord.py's REST base and default gateway at ``fake``; restore on exit.

    Keep it active for the whole life of the client: after a non-resumable INVALID_SESSION
    discord.py reconnects to ``DEFAULT_GATEWAY`` again.
    """
    import discord.gateway
    import discord.http

    check_discord_py_internals()
    if fake.port is None:
        raise RuntimeError("start the fake before pointing discord.py at it")
    saved_base = discord.http.Route.BASE
    saved_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = fake.api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    try:
        yield fake
    finally:
        discord.http.Route.BASE = saved_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = saved_gateway


# ---------------------------------------------------------------------------------------
# Internal state
# ---------------------------------------------------------------------------------------


class _GatewayConn:
    def __init__(self, ws: web.WebSocketResponse, compress: Optional[str], path: str, number: int) -> None:
        self.ws = ws
        self.compress = compress
        self.path = path
        self.number = number
        self.session: Optional[_Session] = None
        self.server_close_code: Optional[int] = None
        self.client_close_code: Optional[int] = None
        self.lock = asyncio.Lock()
        self._z = zlib.compressobj() if compress == "zlib-stream" else None
        self._zstd = None
        if compress == "zstd-stream":
            self._zstd = _zstd_compressobj()

    @property
    def open(self) -> bool:
        return not self.ws.closed and self.server_close_code is None

    async def send(self, payload: dict) -> None:
        raw = json.dumps(payload, separators=(",", ":")).encode()
        async with self.lock:
            if self.ws.closed:
                raise ConnectionResetError("gateway connection closed")
            if self._z is not None:
                await self.ws.send_bytes(self._z.compress(raw) + self._z.flush(zlib.Z_SYNC_FLUSH))
            elif self._zstd is not None:
                await self.ws.send_bytes(self._zstd(raw))
            else:
                await self.ws.send_str(raw.decode())

    async def close(self, code: int, reason: str = "") -> None:
        if self.server_close_code is None:
            self.server_close_code = code
        with contextlib.suppress(Exception):
            await self.ws.close(code=code, message=reason.encode())


def _zstd_compressobj() -> Callable[[bytes], bytes]:
    try:
        import zstandard  # type: ignore

        cobj = zstandard.ZstdCompressor().compressobj()
        return lambda raw: cobj.compress(raw) + cobj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
    except ImportError:
        pass
    try:
        from compression import zstd  # type: ignore  # Python 3.14+

        comp = zstd.ZstdCompressor()
        return lambda raw: comp.compress(raw, zstd.ZstdCompressor.FLUSH_BLOCK)
    except ImportError as exc:
        raise RuntimeError("zstd-stream requested but neither zstandard nor compression.zstd is available") from exc


@dataclasses.dataclass
class _Session:
    id: str
    intents: int
    identify: dict
    seq: int = 0
    resumable: bool = True
    conn: Optional[_GatewayConn] = None
    buffer: List[dict] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class _Interaction:
    id: str
    token: str
    type: int
    payload: dict
    channel_id: str
    guild_id: Optional[str]
    user: dict
    created_at: float
    dispatched_at: Optional[float] = None
    response_type: Optional[int] = None
    original_message_id: Optional[str] = None
    deferred_pending: bool = False  # deferred (type 5) and no message content yet
    message_ids: List[str] = dataclasses.field(default_factory=list)
    ephemeral: bool = False
    modal: Optional[dict] = None  # the modal shown in answer (response type 9)


@dataclasses.dataclass
class _StoredAttachment:
    id: str
    channel_id: str
    filename: str
    content_type: str
    data: bytes


@dataclasses.dataclass
class _Upload:
    upload_filename: str
    filename: str
    file_size: int
    data: Optional[bytes] = None


class _Rule:
    def __init__(self, pattern: str, method: Optional[str], times: int, **kw: Any) -> None:
        self.pattern, self.method, self.times, self.kw = pattern, (method.upper() if method else None), times, kw

    def matches(self, method: str, path: str) -> bool:
        return self.times > 0 and (self.method is None or self.method == method) and self.pattern in path


class _Bucket:
    def __init__(self, name: str, limit: int, per: float) -> None:
        self.hash = hashlib.sha1(name.encode()).hexdigest()[:32]
        self.limit, self.per = limit, per
        self.remaining = limit
        self.reset_at = 0.0


# ---------------------------------------------------------------------------------------
# The fake
# ---------------------------------------------------------------------------------------


class DiscordFake:
    """Discord on 127.0.0.1: REST under ``api_base``, gateway at ``gateway_url``, CDN."""

    def __init__(
        self,
        token: str = "fake-bot-token",
        application_id: Optional[int] = None,
        bot_user_id: Optional[int] = None,
        *,
        bot_name: str = "Confab",
        heartbeat_interval: int = 41250,
        interaction_ack_deadline: Optional[float] = 3.0,
        upload_limit: int = DEFAULT_UPLOAD_LIMIT,
        allowed_privileged_intents: int = Intents.PRIVILEGED,
        buckets: Optional[Dict[str, Tuple[int, float]]] = None,
        echo_own_messages: bool = True,
        require_user_agent: bool = True,
    ) -> None:
        self.token = token
        self.heartbeat_interval = heartbeat_interval
        self.interaction_ack_deadline = interaction_ack_deadline
        self.upload_limit = upload_limit
        self.allowed_privileged_intents = allowed_privileged_intents
        self.bucket_config = dict(DEFAULT_BUCKETS if buckets is None else {**DEFAULT_BUCKETS, **buckets})
        self.echo_own_messages = echo_own_messages
        self.require_user_agent = require_user_agent
        self._sf_last = 0
        self._secret = secrets.token_bytes(32)

        self.application_id = str(application_id or self._snowflake())
        self.bot_user_id = str(bot_user_id or self.application_id)

        # Recording ---------------------------------------------------------------------
        self.requests: List[RecordedRequest] = []
        self.gateway_received: List[dict] = []  # {"conn": n, "op": .., "d": ..}
        self.gateway_sent: List[dict] = []  # everything sent, with "conn"
        self.dropped_events: List[Tuple[str, dict]] = []  # filtered out by intents
        self.identify_count = 0
        self.resume_count = 0
        self.heartbeat_count = 0
        self.identify_payloads: List[dict] = []
        self.intents: Optional[int] = None
        self.gateway_connections: List[_GatewayConn] = []
        self.close_codes: List[Optional[int]] = []  # client close codes, per closed connection
        self.presence_updates: List[dict] = []
        self.global_commands: List[dict] = []
        self.guild_commands: Dict[str, List[dict]] = {}
        self.typing: List[str] = []  # channel ids
        self.reactions: List[Tuple[str, str, str, str]] = []  # (method, channel, message, emoji)

        # World -------------------------------------------------------------------------
        self.users: Dict[str, dict] = {}
        self.channels: Dict[str, dict] = {}
        self.guilds: Dict[str, dict] = {}  # id -> {"guild": ..., "roles": [...], "members": {uid: member}}
        self.messages: Dict[str, dict] = {}  # id -> REST-shaped message
        self.attachments: Dict[str, _StoredAttachment] = {}
        self.attachment_redirects: Dict[str, str] = {}   # attachment id -> Location of a 302
        self.uploads: Dict[str, _Upload] = {}
        self.interactions: Dict[str, _Interaction] = {}  # by token

        self.bot_user = self._make_user(bot_name, user_id=self.bot_user_id, bot=True)
        self.user = self.add_user("alice", global_name="Alice")
        self.other_user = self.add_user("bob", global_name="Bob")
        self.guild_id = self.add_guild("Confab Test Server", owner=self.user)
        self.channel_id = self.add_text_channel("general")["id"]
        self.support_channel_id = self.add_text_channel("support")["id"]
        self.dm_channel_id = self.add_dm_channel(self.user)["id"]

        # Runtime -----------------------------------------------------------------------
        self.port: Optional[int] = None
        self._runner: Optional[web.AppRunner] = None
        self._session: Optional[_Session] = None
        self._sessions: Dict[str, _Session] = {}
        self._consumed: set = set()
        self._changed: Optional[asyncio.Event] = None
        self._rate_rules: List[_Rule] = []
        self._faults: List[_Rule] = []
        self._holds: Dict[tuple, asyncio.Event] = {}
        self.held: List[str] = []     # "METHOD path" of each request that arrived while held
        self._buckets: Dict[str, _Bucket] = {}
        self._conn_counter = 0

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.base_url}/api/v{API_VERSION}"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gw"

    @property
    def resume_gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gw-resume"

    async def start(self) -> "DiscordFake":
        self._changed = asyncio.Event()
        app = web.Application(client_max_size=self.upload_limit + 8 * 1024 * 1024)
        app.router.add_route("*", "/api/v{version}/{tail:.*}", self._api_entry)
        app.router.add_get("/gw", self._gateway_entry)
        app.router.add_get("/gw-resume", self._gateway_entry)
        app.router.add_get("/attachments/{channel_id}/{attachment_id}/{filename}", self._cdn_entry)
        app.router.add_get("/media/attachments/{channel_id}/{attachment_id}/{filename}", self._cdn_entry)
        app.router.add_put("/upload/{upload_filename:.+}", self._upload_entry)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        self.release_all()
        for conn in list(self.gateway_connections):
            if conn.open:
                await conn.close(WSCloseCode.GOING_AWAY, "fake stopping")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> "DiscordFake":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    # -- ids, world -----------------------------------------------------------------------

    def _snowflake(self, ms: Optional[int] = None) -> str:
        ms = int(time.time() * 1000) if ms is None else ms
        value = ((ms - DISCORD_EPOCH_MS) << 22) | (1 << 17)
        value = max(value, self._sf_last + 1)
        self._sf_last = value
        return str(value)

    def _make_user(self, username: str, *, user_id: Optional[str] = None, bot: bool = False,
                   global_name: Optional[str] = None) -> dict:
        user = {
            "id": user_id or self._snowflake(),
            "username": username,
            "discriminator": "0",
            "global_name": global_name,
            "avatar": None,
            "avatar_decoration_data": None,
            "banner": None,
            "accent_color": None,
            "public_flags": 0,
            "flags": 0,
            "collectibles": None,
            "primary_guild": None,
        }
        if bot:
            user["bot"] = True
        self.users[user["id"]] = user
        return user

    def add_user(self, username: str, *, global_name: Optional[str] = None, bot: bool = False,
                 guild_id: Optional[str] = None, roles: Optional[List[str]] = None) -> dict:
        """A user; also a member of ``guild_id`` (default: every guild)."""
        user = self._make_user(username, global_name=global_name, bot=bot)
        for gid in ([guild_id] if guild_id else list(self.guilds)):
            self._add_member(gid, user, roles or [])
        return user

    def _add_member(self, guild_id: str, user: dict, roles: List[str]) -> dict:
        member = {
            "user": user,
            "nick": None,
            "avatar": None,
            "banner": None,
            "roles": list(roles),
            "joined_at": _iso(_snowflake_ms(user["id"])),
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "communication_disabled_until": None,
        }
        self.guilds[guild_id]["members"][user["id"]] = member
        return member

    def add_guild(self, name: str, *, owner: dict) -> str:
        gid = self._snowflake()
        everyone = self._role(gid, "@everyone", EVERYONE_PERMISSIONS, position=0)
        admins = self._role(self._snowflake(), "Admins", 8, position=2, hoist=True)
        bot_role = self._role(self._snowflake(), self.bot_user["username"], BOT_PERMISSIONS, position=1,
                              managed=True, tags={"bot_id": self.bot_user_id})
        self.guilds[gid] = {
            "guild": {
                "id": gid,
                "name": name,
                "icon": None,
                "icon_hash": None,
                "splash": None,
                "discovery_splash": None,
                "banner": None,
                "description": None,
                "owner_id": owner["id"],
                "region": "deprecated",
                "afk_channel_id": None,
                "afk_timeout": 300,
                "widget_enabled": False,
                "widget_channel_id": None,
                "verification_level": 0,
                "default_message_notifications": 1,
                "explicit_content_filter": 0,
                "features": [],
                "mfa_level": 0,
                "application_id": None,
                "system_channel_id": None,
                "system_channel_flags": 0,
                "rules_channel_id": None,
                "max_presences": None,
                "max_members": 500000,
                "vanity_url_code": None,
                "premium_tier": 0,
                "premium_subscription_count": 0,
                "preferred_locale": "en-US",
                "public_updates_channel_id": None,
                "max_video_channel_users": 25,
                "max_stage_video_channel_users": 50,
                "nsfw_level": 0,
                "premium_progress_bar_enabled": False,
                "safety_alerts_channel_id": None,
                "latest_onboarding_question_id": None,
                "incidents_data": None,
                "hub_type": None,
                "emojis": [],
                "stickers": [],
            },
            "roles": [everyone, admins, bot_role],
            "admin_role_id": admins["id"],
            "bot_role_id": bot_role["id"],
            "members": {},
        }
        self._add_member(gid, self.bot_user, [bot_role["id"]])
        self._add_member(gid, owner, [admins["id"]])
        for user in self.users.values():
            if user["id"] not in self.guilds[gid]["members"] and not user.get("bot"):
                self._add_member(gid, user, [])
        return gid

    @staticmethod
    def _role(role_id: str, name: str, permissions: int, *, position: int, hoist: bool = False,
              managed: bool = False, tags: Optional[dict] = None) -> dict:
        role = {
            "id": role_id,
            "name": name,
            "description": None,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": hoist,
            "icon": None,
            "unicode_emoji": None,
            "position": position,
            "permissions": str(permissions),
            "managed": managed,
            "mentionable": False,
            "flags": 0,
        }
        if tags is not None:
            role["tags"] = tags
        return role

    def add_text_channel(self, name: str, *, guild_id: Optional[str] = None, topic: Optional[str] = None) -> dict:
        gid = guild_id or self.guild_id
        position = sum(1 for c in self.channels.values() if c.get("guild_id") == gid)
        channel = {
            "id": self._snowflake(),
            "type": 0,
            "guild_id": gid,
            "name": name,
            "position": position,
            "permission_overwrites": [],
            "parent_id": None,
            "topic": topic,
            "nsfw": False,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "flags": 0,
            "icon_emoji": None,
            "theme_color": None,
        }
        self.channels[channel["id"]] = channel
        return channel

    def add_dm_channel(self, user: dict) -> dict:
        for channel in self.channels.values():
            if channel["type"] == 1 and channel["recipients"][0]["id"] == user["id"]:
                return channel
        channel = {
            "id": self._snowflake(),
            "type": 1,
            "last_message_id": None,
            "flags": 0,
            "recipients": [user],
        }
        self.channels[channel["id"]] = channel
        return channel

    def add_role(self, name: str, *, mentionable: bool = False, guild_id: Optional[str] = None) -> str:
        """A role in the guild (no permissions of its own); give it with ``add_user(roles=[...])``.
        A role that is not ``mentionable`` is pinged only by someone with MENTION_EVERYONE."""
        gid = guild_id or self.guild_id
        roles = self.guilds[gid]["roles"]
        role = self._role(self._snowflake(), name, 0, position=len(roles))
        role["mentionable"] = mentionable
        roles.append(role)
        return role["id"]

    def _new_thread(self, parent: dict, message: dict, owner: dict, body: Any) -> dict:
        """Start Thread from Message, as documented
        (https://discord.com/developers/docs/resources/channel#start-thread-from-message): a
        GUILD_TEXT channel gets a PUBLIC_THREAD (11), an announcement channel an
        ANNOUNCEMENT_THREAD (10); the thread's id is the message's, so a message has one thread."""
        if parent["type"] not in (0, 5):
            raise _error(400, ErrorCode.INVALID_CHANNEL_TYPE, "Cannot execute action on this channel type")
        if message["id"] in self.channels:
            raise _error(400, ErrorCode.THREAD_ALREADY_CREATED, "A thread has already been created for this message")
        if not isinstance(body, dict):
            raise _form_error([], "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
        name = body.get("name")
        if not isinstance(name, str) or not 1 <= len(name) <= 100:
            raise _form_error(["name"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        archive = body.get("auto_archive_duration")
        if archive is None:
            archive = parent.get("default_auto_archive_duration", 1440)
        if archive not in (60, 1440, 4320, 10080):
            raise _form_error(["auto_archive_duration"], "BASE_TYPE_CHOICES",
                              "Value must be one of {60, 1440, 4320, 10080}.")
        slowmode = body.get("rate_limit_per_user")
        if slowmode is not None and (isinstance(slowmode, bool) or not isinstance(slowmode, int)
                                     or not 0 <= slowmode <= 21600):
            raise _form_error(["rate_limit_per_user"], "NUMBER_TYPE_MAX", "int value should be between 0 and 21600.")
        now = _iso(int(time.time() * 1000))
        thread = {
            "id": message["id"],
            "type": 11 if parent["type"] == 0 else 10,
            "guild_id": parent["guild_id"],
            "parent_id": parent["id"],
            "owner_id": owner["id"],
            "name": name,
            "last_message_id": None,
            "message_count": 0,
            "member_count": 1,
            "rate_limit_per_user": slowmode or 0,
            "flags": 0,
            "total_message_sent": 0,
            "thread_metadata": {"archived": False, "auto_archive_duration": archive, "archive_timestamp": now,
                                "locked": False, "create_timestamp": now},
        }
        self.channels[thread["id"]] = thread
        message["thread"] = dict(thread)    # the message object's `thread` field
        return thread

    async def start_thread(self, message: dict, *, by: Optional[dict] = None, name: str = "thread") -> dict:
        """A person (``by``, default the first user) starts a thread from ``message``, as in
        Discord's client; the client gets THREAD_CREATE. Returns the thread channel."""
        stored = self.messages.get(str(message["id"]))
        if stored is None:
            raise ValueError("message is not a message the fake knows")
        thread = self._new_thread(self.channels[stored["channel_id"]], stored, by or self.user, {"name": name})
        await self._thread_created(thread)
        return thread

    async def _thread_created(self, thread: dict) -> None:
        # https://discord.com/developers/docs/events/gateway-events#thread-create: a new thread
        # comes with newly_created = true.
        if self._session is not None:
            await self.dispatch("THREAD_CREATE", dict(thread, newly_created=True))

    def is_thread(self, channel_id: str) -> bool:
        return self.channels.get(str(channel_id), {}).get("type") in (10, 11, 12)

    def member(self, user: dict, guild_id: Optional[str] = None) -> dict:
        return self.guilds[guild_id or self.guild_id]["members"][user["id"]]

    # -- attachments ----------------------------------------------------------------------

    def _cdn_urls(self, channel_id: str, attachment_id: str, filename: str) -> Tuple[str, str]:
        now = int(time.time())
        ex, is_ = format(now + 86400, "x"), format(now, "x")
        path = f"/attachments/{channel_id}/{attachment_id}/{filename}"
        hm = hmac.new(self._secret, f"{path}|{ex}|{is_}".encode(), hashlib.sha256).hexdigest()
        query = f"?ex={ex}&is={is_}&hm={hm}&"
        return f"{self.base_url}{path}{query}", f"{self.base_url}/media{path}{query}"

    def redirect_attachment(self, attachment_id: str, location: str) -> None:
        """The next download of the attachment answers 302 to ``location`` (a CDN may move a file)."""
        self.attachment_redirects[str(attachment_id)] = location

    def add_attachment(self, content: bytes, filename: str, content_type: Optional[str] = None, *,
                       channel_id: Optional[str] = None, **extra: Any) -> dict:
        """Store ``content`` on the fake CDN and return a Discord attachment object for it.

        ``extra`` fields are added as given (``duration_secs``, ``waveform``, ``description``,
        ``width``/``height`` ...).  Image width/height are read from PNG/JPEG/GIF/WebP data
        when not given, as Discord always sends them for images.
        """
        if self.port is None:
            raise RuntimeError("start the fake before adding attachments (their URLs name its port)")
        channel_id = channel_id or self.channel_id
        att_id = self._snowflake()
        ctype = content_type or _guess_content_type(filename)
        self.attachments[att_id] = _StoredAttachment(att_id, channel_id, filename, ctype, bytes(content))
        url, proxy_url = self._cdn_urls(channel_id, att_id, filename)
        att: Dict[str, Any] = {
            "id": att_id,
            "filename": filename,
            "size": len(content),
            "url": url,
            "proxy_url": proxy_url,
            "content_type": ctype,
            "content_scan_version": 0,
        }
        if ctype.startswith("image/") and "width" not in extra:
            size = _image_size(content)
            if size:
                att["width"], att["height"] = size
                att["placeholder_version"] = 1
        att.update(extra)
        return att

    def attachment_bytes(self, attachment: Union[dict, str]) -> bytes:
        att_id = attachment["id"] if isinstance(attachment, dict) else attachment
        return self.attachments[str(att_id)].data

    # -- messages (world) -----------------------------------------------------------------

    def _channel_or_404(self, channel_id: str) -> dict:
        channel = self.channels.get(str(channel_id))
        if channel is None:
            raise _error(404, ErrorCode.UNKNOWN_CHANNEL, "Unknown Channel")
        return channel

    def _make_message(self, channel_id: str, author: dict, content: str = "", *, attachments: Optional[list] = None,
                      embeds: Optional[list] = None, components: Optional[list] = None, flags: int = 0,
                      message_reference: Optional[dict] = None, type_: Optional[int] = None,
                      nonce: Optional[Union[str, int]] = None, tts: bool = False, webhook_id: Optional[str] = None,
                      interaction: Optional[_Interaction] = None, store: bool = True,
                      sticker_items: Optional[list] = None, poll: Optional[dict] = None,
                      allowed_mentions: Optional[dict] = None) -> dict:
        channel = self._channel_or_404(channel_id)
        mid = self._snowflake()
        mentions = self._parse_mentions(content, channel)
        msg: Dict[str, Any] = {
            "type": 0,
            "channel_id": str(channel_id),
            "content": content,
            "attachments": attachments or [],
            "embeds": embeds or [],
            "timestamp": _iso(_snowflake_ms(mid)),
            "edited_timestamp": None,
            "flags": flags,
            "components": components or [],
            "id": mid,
            "author": author,
            "mentions": mentions,
            "mention_roles": self._pinged_roles(content, channel, author, allowed_mentions),
            "mention_everyone": "@everyone" in content or "@here" in content,
            "pinned": False,
            "tts": tts,
        }
        if nonce is not None:
            msg["nonce"] = nonce
        if sticker_items:
            msg["sticker_items"] = sticker_items
        if poll is not None:
            msg["poll"] = poll
        if message_reference is not None:
            ref_id = str(message_reference.get("message_id"))
            ref = {"type": message_reference.get("type", 0), "channel_id": str(channel_id), "message_id": ref_id}
            if channel.get("guild_id"):
                ref["guild_id"] = channel["guild_id"]
            msg["message_reference"] = ref
            referenced = self.messages.get(ref_id)
            if referenced is not None:
                # A copy as of now, one level deep (Discord does not nest referenced_message).
                referenced = json.loads(json.dumps(referenced))
                referenced.pop("referenced_message", None)
            msg["referenced_message"] = referenced
            msg["type"] = 19
        if webhook_id is not None:
            msg["webhook_id"] = webhook_id
            msg["application_id"] = self.application_id
        if interaction is not None:
            self._add_interaction_metadata(msg, interaction)
        if type_ is not None:
            msg["type"] = type_
        if store:
            self.messages[mid] = msg
            if not flags & MessageFlags.EPHEMERAL:
                channel["last_message_id"] = mid
                if self.is_thread(channel["id"]):
                    channel["message_count"] += 1
                    channel["total_message_sent"] += 1
        return msg

    def _add_interaction_metadata(self, msg: dict, inter: _Interaction) -> None:
        data = inter.payload.get("data", {})
        meta: Dict[str, Any] = {
            "id": inter.id,
            "type": inter.type,
            "user": inter.user,
            "authorizing_integration_owners": inter.payload.get("authorizing_integration_owners", {}),
        }
        if inter.type == 2:
            meta["name"] = data.get("name")
            meta["command_type"] = data.get("type", 1)
            msg["interaction"] = {"id": inter.id, "type": inter.type, "name": data.get("name"), "user": inter.user}
            if inter.guild_id:
                member = dict(self.member(inter.user, inter.guild_id))
                member.pop("user", None)
                msg["interaction"]["member"] = member
        elif inter.type == 3 and inter.payload.get("message"):
            meta["interacted_message_id"] = inter.payload["message"]["id"]
        if inter.original_message_id and msg["id"] != inter.original_message_id:
            meta["original_response_message_id"] = inter.original_message_id
        msg["interaction_metadata"] = meta
        msg["type"] = 20 if inter.type == 2 else msg["type"]

    def _parse_mentions(self, content: str, channel: dict) -> List[dict]:
        found: List[dict] = []
        for uid in re.findall(r"<@!?(\d+)>", content or ""):
            user = self.users.get(uid)
            if user is not None and user not in found:
                found.append(user)
        return found

    def _pinged_roles(self, content: str, channel: dict, author: dict, allowed: Optional[dict]) -> List[str]:
        """The role ids of ``<@&id>`` mentions that ping. Without ``allowed_mentions`` every
        mention is parsed; with it, only the ones it allows. A role that is not mentionable pings
        only when the author has MENTION_EVERYONE (or is an administrator).
        Discord does not say whether ``mention_roles`` lists a role that did not ping; the fake
        lists only roles that pinged, which is what a test of a ping has to see."""
        gid = channel.get("guild_id")
        if not gid or gid not in self.guilds:
            return []
        roles = {r["id"]: r for r in self.guilds[gid]["roles"]}
        if allowed is None:
            allow: Callable[[str], bool] = lambda rid: True
        else:
            listed = {str(r) for r in allowed.get("roles") or []}
            parse_roles = "roles" in (allowed.get("parse") or [])
            allow = lambda rid: parse_roles or rid in listed
        member = self.guilds[gid]["members"].get(author["id"])
        perms = self._member_permissions(gid, author["id"]) if member is not None else 0
        strong = bool(perms & (_P_MENTION_EVERYONE | _P_ADMINISTRATOR))
        out: List[str] = []
        for rid in re.findall(r"<@&(\d+)>", content or ""):
            role = roles.get(rid)
            if role is not None and rid not in out and allow(rid) and (role["mentionable"] or strong):
                out.append(rid)
        return out

    @staticmethod
    def _validate_allowed_mentions(allowed: Any) -> Optional[dict]:
        # https://discord.com/developers/docs/resources/message#allowed-mentions-object
        if allowed is None:
            return None
        if not isinstance(allowed, dict):
            raise _form_error(["allowed_mentions"], "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
        parse = allowed.get("parse") or []
        if not isinstance(parse, list) or any(p not in ("roles", "users", "everyone") for p in parse):
            raise _form_error(["allowed_mentions", "parse"], "BASE_TYPE_CHOICES",
                              "Value must be one of ('roles', 'users', 'everyone').")
        for key in ("roles", "users"):
            ids = allowed.get(key)
            if ids is None:
                continue
            if not isinstance(ids, list) or len(ids) > 100:
                raise _form_error(["allowed_mentions", key], "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")
            if ids and key in parse:
                # Documented: parse and the matching list are mutually exclusive.
                raise _form_error(["allowed_mentions", key], "SET_TYPE_ALREADY_CONTAINS_VALUE",
                                  f"parse:[\"{key}\"] and {key}: [ids...] are mutually exclusive.")
        return allowed

    def _gateway_message(self, msg: dict) -> dict:
        """A stored (REST-shaped) message as MESSAGE_CREATE/UPDATE carries it."""
        data = json.loads(json.dumps(msg))
        channel = self.channels.get(msg["channel_id"], {})
        gid = channel.get("guild_id")
        if gid:
            data["guild_id"] = gid
            members = self.guilds[gid]["members"]
            if "webhook_id" not in msg or msg.get("interaction_metadata"):
                member = members.get(msg["author"]["id"])
                if member is not None:
                    data["member"] = {k: v for k, v in member.items() if k != "user"}
            for mention in data["mentions"]:
                member = members.get(mention["id"])
                if member is not None:
                    mention["member"] = {k: v for k, v in member.items() if k != "user"}
        data["channel_type"] = channel.get("type", 0)
        return data

    def _content_visible(self, msg: dict, intents: int) -> bool:
        # https://discord.com/developers/docs/events/gateway#message-content-intent
        if intents & Intents.MESSAGE_CONTENT:
            return True
        if msg["author"]["id"] == self.bot_user_id:
            return True
        if not self.channels.get(msg["channel_id"], {}).get("guild_id"):
            return True
        return any(m["id"] == self.bot_user_id for m in msg.get("mentions", []))

    def _blank_content(self, msg: dict, intents: int) -> dict:
        if self._content_visible(msg, intents):
            out = msg
        else:
            out = dict(msg, content="", embeds=[], attachments=[], components=[])
            out.pop("poll", None)
        if isinstance(out.get("referenced_message"), dict):
            out = dict(out, referenced_message=self._blank_content(out["referenced_message"], intents))
        return out

    # -- payload builders -----------------------------------------------------------------

    def message_create_mention(self, text: str = "question", *, author: Optional[dict] = None,
                               channel_id: Optional[str] = None, attachments: Optional[list] = None) -> dict:
        """MESSAGE_CREATE for a guild message "<@BOT> text" (mentions array included)."""
        content = f"<@{self.bot_user_id}> {text}".rstrip()
        return self._user_message(channel_id or self.channel_id, author or self.user, content, attachments=attachments)

    def message_create_guild(self, content: str, *, author: Optional[dict] = None,
                             channel_id: Optional[str] = None, attachments: Optional[list] = None) -> dict:
        """MESSAGE_CREATE for a plain guild message (no mention)."""
        return self._user_message(channel_id or self.channel_id, author or self.user, content, attachments=attachments)

    def message_create_dm(self, content: str = "hello", *, author: Optional[dict] = None,
                          attachments: Optional[list] = None) -> dict:
        """MESSAGE_CREATE for a DM to the bot: no guild_id, no member, channel_type 1."""
        author = author or self.user
        channel = self.add_dm_channel(author)
        return self._user_message(channel["id"], author, content, attachments=attachments)

    def message_create_reply(self, content: str, referenced_message: dict, *, author: Optional[dict] = None,
                             mention_author: bool = True) -> dict:
        """MESSAGE_CREATE for a reply (type 19, message_reference + referenced_message)."""
        ref_id = str(referenced_message["id"])
        if ref_id not in self.messages:
            raise ValueError("referenced_message is not a message the fake knows")
        channel_id = self.messages[ref_id]["channel_id"]
        msg = self._make_message(channel_id, author or self.user, content, message_reference={"message_id": ref_id})
        ref_author = self.messages[ref_id]["author"]
        if mention_author and all(m["id"] != ref_author["id"] for m in msg["mentions"]):
            msg["mentions"].append(ref_author)  # Discord lists the replied-to author when pinged
        return self._gateway_message(msg)

    def message_create_voice(self, audio: bytes, *, duration_secs: float = 2.5, waveform: Optional[bytes] = None,
                             author: Optional[dict] = None, channel_id: Optional[str] = None, dm: bool = False,
                             filename: str = "voice-message.ogg") -> dict:
        """MESSAGE_CREATE for a voice message: flags 8192, one audio/ogg attachment with
        ``duration_secs`` and a base64 ``waveform`` (at most 256 bytes)."""
        if waveform is None:
            waveform = bytes(min(255, (i * 37) % 256) for i in range(min(256, max(1, int(duration_secs * 10)))))
        if len(waveform) > 256:
            raise ValueError("a voice message waveform has at most 256 samples")
        author = author or self.user
        cid = self.add_dm_channel(author)["id"] if dm else (channel_id or self.channel_id)
        att = self.add_attachment(audio, filename, "audio/ogg", channel_id=cid, duration_secs=duration_secs,
                                  waveform=base64.b64encode(waveform).decode())
        return self._user_message(cid, author, "", attachments=[att], flags=MessageFlags.IS_VOICE_MESSAGE)

    def message_create_image(self, image: bytes, *, filename: str = "photo.png", content_type: Optional[str] = None,
                             content: str = "", mention: bool = True, author: Optional[dict] = None,
                             channel_id: Optional[str] = None, dm: bool = False, **extra: Any) -> dict:
        """MESSAGE_CREATE with one image attachment (width/height read from the image)."""
        author = author or self.user
        cid = self.add_dm_channel(author)["id"] if dm else (channel_id or self.channel_id)
        att = self.add_attachment(image, filename, content_type, channel_id=cid, **extra)
        if mention and not dm:
            content = f"<@{self.bot_user_id}> {content}".rstrip()
        return self._user_message(cid, author, content, attachments=[att])

    def _user_message(self, channel_id: str, author: dict, content: str, *, attachments: Optional[list] = None,
                      flags: int = 0) -> dict:
        msg = self._make_message(channel_id, author, content, attachments=attachments, flags=flags,
                                 nonce=str(int(self._snowflake()) + 1))
        for att in msg["attachments"]:
            stored = self.attachments.get(att["id"])
            if stored is not None and stored.channel_id != channel_id:
                raise ValueError("attachment was added for another channel; pass channel_id to add_attachment")
        return self._gateway_message(msg)

    def _interaction_common(self, type_: int, *, user: Optional[dict], channel_id: Optional[str], dm: bool) -> dict:
        user = user or self.user
        if dm:
            channel = self.add_dm_channel(user)
        else:
            channel = self._channel_or_404(channel_id or self.channel_id)
        gid = channel.get("guild_id")
        iid = self._snowflake()
        token = "aW50ZXJhY3Rpb246" + base64.urlsafe_b64encode(
            f"{iid}:{secrets.token_hex(24)}".encode()).decode().rstrip("=")
        payload: Dict[str, Any] = {
            "app_permissions": str(BOT_PERMISSIONS),
            "application_id": self.application_id,
            "attachment_size_limit": self.upload_limit,
            "authorizing_integration_owners": {"0": gid or "0"},
            "channel": None,
            "channel_id": channel["id"],
            "context": 0 if gid else 1,
            "entitlement_sku_ids": [],
            "entitlements": [],
            "id": iid,
            "locale": "en-US",
            "token": token,
            "type": type_,
            "version": 1,
        }
        if gid:
            g = self.guilds[gid]["guild"]
            payload["guild"] = {"features": g["features"], "id": gid, "locale": g["preferred_locale"]}
            payload["guild_id"] = gid
            payload["guild_locale"] = g["preferred_locale"]
            member = dict(self.member(user, gid))
            member["permissions"] = str(self._member_permissions(gid, user["id"]))
            payload["member"] = member
            payload["channel"] = {k: v for k, v in channel.items() if k in (
                "id", "type", "guild_id", "name", "position", "permission_overwrites", "parent_id", "topic",
                "nsfw", "last_message_id", "rate_limit_per_user", "flags", "icon_emoji", "theme_color",
                "owner_id", "thread_metadata", "message_count", "member_count", "total_message_sent")}
            payload["channel"]["permissions"] = str(BOT_PERMISSIONS)
        else:
            payload["user"] = user
            payload["channel"] = {"flags": 0, "id": channel["id"], "last_message_id": channel["last_message_id"],
                                  "recipients": [user], "type": 1}
        self.interactions[token] = _Interaction(
            id=iid, token=token, type=type_, payload=payload, channel_id=channel["id"], guild_id=gid,
            user=user, created_at=time.monotonic())
        return payload

    def _member_permissions(self, guild_id: str, user_id: str) -> int:
        g = self.guilds[guild_id]
        if g["guild"]["owner_id"] == user_id:
            return (1 << 51) - 1
        perms = 0
        roles = {r["id"]: r for r in g["roles"]}
        for rid in [guild_id] + g["members"][user_id]["roles"]:
            perms |= int(roles[rid]["permissions"])
        return (1 << 51) - 1 if perms & 8 else perms

    def interaction_command(self, name: str, options: Union[None, Dict[str, Any], List[dict]] = None, *,
                            user: Optional[dict] = None, channel_id: Optional[str] = None, dm: bool = False,
                            guild_command: Optional[bool] = None, require_synced: bool = True) -> dict:
        """INTERACTION_CREATE for a slash command (type 2).

        The command must have been synced (PUT .../commands): Discord can only send
        interactions for registered commands, and ``data.id`` is the registered id.
        ``options`` is a list of raw option objects, or a dict ``{name: value}`` checked
        against the registered options (type-11 attachment options take the dict that
        :meth:`add_attachment` returned and fill ``data.resolved.attachments``).
        """
        payload = self._interaction_common(2, user=user, channel_id=channel_id, dm=dm)
        gid = payload.get("guild_id")
        command = self._find_command(name, gid, guild_command)
        if command is None and require_synced:
            del self.interactions[payload["token"]]
            raise ValueError(f"command {name!r} is not registered; sync the command tree first "
                             f"(registered: {[c['name'] for c in self._visible_commands(gid)]})")
        data: Dict[str, Any] = {"id": command["id"] if command else self._snowflake(), "name": name, "type": 1}
        if command and command.get("guild_id"):
            data["guild_id"] = command["guild_id"]
        resolved: Dict[str, Dict[str, Any]] = {}
        if isinstance(options, dict):
            defs = {o["name"]: o for o in (command or {}).get("options", [])}
            opts = []
            for key, value in options.items():
                if command is not None and key not in defs:
                    raise ValueError(f"command {name!r} has no option {key!r}")
                otype = defs.get(key, {}).get("type", 3)
                if otype == 11:
                    if not isinstance(value, dict) or "id" not in value:
                        raise ValueError("an attachment option takes the dict returned by add_attachment()")
                    resolved.setdefault("attachments", {})[value["id"]] = value
                    value = value["id"]
                elif otype == 6:
                    user_obj = value if isinstance(value, dict) else self.users[str(value)]
                    resolved.setdefault("users", {})[user_obj["id"]] = user_obj
                    if gid and user_obj["id"] in self.guilds[gid]["members"]:
                        m = {k: v for k, v in self.member(user_obj, gid).items() if k != "user"}
                        m["permissions"] = str(self._member_permissions(gid, user_obj["id"]))
                        resolved.setdefault("members", {})[user_obj["id"]] = m
                    value = user_obj["id"]
                opts.append({"name": key, "type": otype, "value": value})
            for key, definition in defs.items():
                if definition.get("required") and key not in options:
                    raise ValueError(f"required option {key!r} of {name!r} missing (Discord's client enforces it)")
            data["options"] = opts
        elif options:
            data["options"] = list(options)
        if resolved:
            data["resolved"] = resolved
        payload["data"] = data
        return payload

    def interaction_button(self, custom_id: str, message: dict, *, user: Optional[dict] = None,
                           component_type: int = 2) -> dict:
        """INTERACTION_CREATE for a click on a button (type 3) of ``message``."""
        mid = str(message["id"])
        stored = self.messages.get(mid)
        if stored is None:
            raise ValueError("message is not a message the fake knows")
        found = any(c.get("custom_id") == custom_id for c in _walk_components(stored.get("components", [])))
        if not found:
            raise ValueError(f"message {mid} has no component with custom_id {custom_id!r}")
        channel = self.channels[stored["channel_id"]]
        dm = channel["type"] == 1
        if dm and user is None:
            user = channel["recipients"][0]
        payload = self._interaction_common(3, user=user, channel_id=None if dm else channel["id"], dm=dm)
        payload["data"] = {"component_type": component_type, "custom_id": custom_id}
        payload["message"] = json.loads(json.dumps(stored))
        return payload

    def interaction_modal_submit(self, shown_for: dict, values: Dict[str, str]) -> dict:
        """INTERACTION_CREATE for submitting the modal that was the answer to ``shown_for`` (an
        interaction payload), filled in with ``values`` {custom_id: text} by the same person.

        Discord's client enforces the modal's own rules before anything is sent, so asking for
        what a person could not submit (an unknown field, a required field left empty, a text
        outside min_length..max_length) raises ValueError."""
        shown = self.interaction_state(shown_for)
        if shown.modal is None:
            raise ValueError("no modal was shown in answer to that interaction (response type 9)")
        modal = shown.modal
        inputs: Dict[str, dict] = {}
        for row in modal["components"]:
            for comp in ([row.get("component")] if row.get("type") == 18 else row.get("components") or []):
                if isinstance(comp, dict) and comp.get("type") == 4:
                    inputs[comp["custom_id"]] = comp
        unknown = set(values) - set(inputs)
        if unknown:
            raise ValueError(f"the modal has no text input {sorted(unknown)} (it has {sorted(inputs)})")
        filled: Dict[str, str] = {}
        for cid, comp in inputs.items():
            text = values.get(cid, comp.get("value") or "")
            if comp.get("required", True) and not text:
                raise ValueError(f"{cid!r} is required; Discord's client does not submit the modal without it")
            if text and not (comp.get("min_length") or 0) <= len(text) <= (comp.get("max_length") or 4000):
                raise ValueError(f"{cid!r} must be {comp.get('min_length') or 0}..{comp.get('max_length') or 4000} "
                                 "characters; Discord's client does not submit it otherwise")
            filled[cid] = text
        payload = self._interaction_common(5, user=shown.user, channel_id=None if not shown.guild_id else shown.channel_id,
                                           dm=not shown.guild_id)
        components = []
        for row in modal["components"]:
            if row.get("type") == 18:
                comp = row["component"]
                components.append({"type": 18, "id": row.get("id", 0), "component": {
                    "type": comp["type"], "id": comp.get("id", 0), "custom_id": comp["custom_id"],
                    "value": filled.get(comp["custom_id"], "")}})
            elif row.get("type") == 1:
                comp = row["components"][0]
                components.append({"type": 1, "id": row.get("id", 0), "components": [{
                    "type": 4, "id": comp.get("id", 0), "custom_id": comp["custom_id"],
                    "value": filled[comp["custom_id"]]}]})
        payload["data"] = {"custom_id": modal["custom_id"], "components": components}
        return payload

    def _visible_commands(self, guild_id: Optional[str]) -> List[dict]:
        return list(self.global_commands) + (list(self.guild_commands.get(guild_id, [])) if guild_id else [])

    def _find_command(self, name: str, guild_id: Optional[str], guild_command: Optional[bool]) -> Optional[dict]:
        pools: List[List[dict]] = []
        if guild_command is not False and guild_id:
            pools.append(self.guild_commands.get(guild_id, []))
        if guild_command is not True:
            pools.append(self.global_commands)
        for pool in pools:
            for cmd in pool:
                if cmd["name"] == name and cmd.get("type", 1) == 1:
                    if guild_id is None and (1 not in (cmd.get("contexts") or [0, 1, 2])
                                             or cmd.get("dm_permission") is False):
                        continue  # not usable in a DM with the bot
                    return cmd
        return None

    # -- gateway: test helpers ------------------------------------------------------------

    def _touch(self) -> None:
        if self._changed is not None:
            ev, self._changed = self._changed, asyncio.Event()
            ev.set()

    async def _wait_until(self, check: Callable[[], Any], timeout: float, what: str) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            ev = self._changed
            assert ev is not None, "fake not started"
            result = check()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                recent = ", ".join(repr(r) for r in self.requests[-8:])
                raise DiscordFakeTimeout(f"timed out after {timeout}s waiting for {what}; "
                                         f"identifies={self.identify_count} resumes={self.resume_count} "
                                         f"recent requests: [{recent}]")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(ev.wait(), remaining)

    @property
    def connected(self) -> bool:
        """A client is identified (or resumed) on a live gateway connection."""
        s = self._session
        return bool(s and s.conn and s.conn.open)

    async def wait_until_connected(self, timeout: float = 10.0) -> None:
        await self._wait_until(lambda: self.connected, timeout, "a gateway session with a live connection")

    async def wait_for_identify(self, count: int = 1, timeout: float = 10.0) -> dict:
        await self._wait_until(lambda: self.identify_count >= count and self.connected, timeout,
                               f"IDENTIFY #{count}")
        return self.identify_payloads[count - 1]

    async def wait_for_resume(self, count: int = 1, timeout: float = 10.0) -> None:
        await self._wait_until(lambda: self.resume_count >= count and self.connected, timeout, f"RESUME #{count}")

    async def wait_for_gateway(self, op: int, predicate: Optional[Callable[[Any], bool]] = None,
                               timeout: float = 10.0, start: int = 0) -> dict:
        """A payload the client sent on the gateway (``{"conn", "op", "d"}``)."""
        def check() -> Optional[dict]:
            for item in self.gateway_received[start:]:
                if item["op"] == op and (predicate is None or predicate(item["d"])):
                    return item
            return None
        return await self._wait_until(check, timeout, f"gateway op {op} from the client")

    async def wait_for_dispatch(self, event: str, predicate: Optional[Callable[[dict], bool]] = None,
                                timeout: float = 10.0) -> dict:
        """The data of the first DISPATCH ``event`` sent to the client (that ``predicate`` accepts)."""
        def check() -> Optional[dict]:
            for item in self.gateway_sent:
                if item.get("t") == event and (predicate is None or predicate(item["d"])):
                    return item["d"]
            return None
        return await self._wait_until(check, timeout, f"{event} sent to the client")

    async def dispatch(self, event: str, data: dict) -> Optional[int]:
        """Send DISPATCH ``event`` (op 0) with the next sequence number.

        Returns the sequence number, or None if the client's intents filter the event
        out (it is then listed in ``dropped_events``).  While the client is away (after op
        7, a dropped connection) the event is buffered and replayed when it RESUMEs.
        """
        session = self._session
        if session is None:
            raise RuntimeError("no gateway session: no client has identified yet (wait_for_identify())")
        if event in ("MESSAGE_CREATE", "MESSAGE_UPDATE") and data.get("id") in self.messages:
            stored = self.messages[data["id"]]
            if stored["channel_id"] != data.get("channel_id"):
                raise ValueError("message payload does not match the stored message")
        if not self._intent_allows(event, data, session.intents):
            self.dropped_events.append((event, data))
            return None
        if event in ("MESSAGE_CREATE", "MESSAGE_UPDATE"):
            data = self._blank_content(data, session.intents)
        if event == "INTERACTION_CREATE":
            inter = self.interactions.get(data.get("token", ""))
            if inter is not None:
                inter.dispatched_at = time.monotonic()
        return await self._send_dispatch(session, event, data)

    async def _send_dispatch(self, session: _Session, event: str, data: dict) -> int:
        session.seq += 1
        payload = {"op": OP_DISPATCH, "t": event, "s": session.seq, "d": data}
        session.buffer.append(payload)
        del session.buffer[:-2000]
        conn = session.conn
        if conn is not None and conn.open:
            try:
                await self._send(conn, payload)
            except (ConnectionError, RuntimeError):
                pass  # buffered; replayed on RESUME
        self._touch()
        return session.seq

    async def _send(self, conn: _GatewayConn, payload: dict) -> None:
        await conn.send(payload)
        self.gateway_sent.append(dict(payload, conn=conn.number))

    def _intent_allows(self, event: str, data: dict, intents: int) -> bool:
        guild = bool(data.get("guild_id"))
        if event.startswith("MESSAGE_REACTION_"):
            return bool(intents & (Intents.GUILD_MESSAGE_REACTIONS if guild else Intents.DIRECT_MESSAGE_REACTIONS))
        if event.startswith("MESSAGE_POLL_VOTE_"):
            return bool(intents & (Intents.GUILD_MESSAGE_POLLS if guild else Intents.DIRECT_MESSAGE_POLLS))
        if event in ("MESSAGE_CREATE", "MESSAGE_UPDATE", "MESSAGE_DELETE", "MESSAGE_DELETE_BULK"):
            return bool(intents & (Intents.GUILD_MESSAGES if guild else Intents.DIRECT_MESSAGES))
        if event == "TYPING_START":
            return bool(intents & (Intents.GUILD_MESSAGE_TYPING if guild else Intents.DIRECT_MESSAGE_TYPING))
        if event.startswith("GUILD_MEMBER") and event != "GUILD_MEMBERS_CHUNK":
            return bool(intents & Intents.GUILD_MEMBERS)
        if event == "PRESENCE_UPDATE":
            return bool(intents & Intents.GUILD_PRESENCES)
        if event.startswith(("GUILD_CREATE", "GUILD_UPDATE", "GUILD_DELETE", "GUILD_ROLE_", "CHANNEL_",
                             "THREAD_", "STAGE_INSTANCE_")):
            return bool(intents & Intents.GUILDS)
        return True

    async def send_reconnect(self) -> None:
        """Send op 7 RECONNECT: the client should reconnect and RESUME."""
        conn = self._live_conn()
        await self._send(conn, {"op": OP_RECONNECT, "d": None, "s": None, "t": None})
        if conn.session is not None and conn.session.conn is conn:
            conn.session.conn = None  # events from now on are buffered for the resume
        self._touch()

    async def send_invalid_session(self, resumable: bool = False) -> None:
        """Send op 9 INVALID_SESSION (d = resumable)."""
        conn = self._live_conn()
        session = conn.session
        await self._send(conn, {"op": OP_INVALID_SESSION, "d": resumable, "s": None, "t": None})
        if session is not None:
            if not resumable:
                session.resumable = False
            if session.conn is conn:
                session.conn = None
        self._touch()

    async def send_heartbeat_request(self) -> None:
        """Send op 1: Discord asking the client for an immediate heartbeat."""
        conn = self._live_conn()
        seq = conn.session.seq if conn.session else None
        await self._send(conn, {"op": OP_HEARTBEAT, "d": seq, "s": None, "t": None})

    async def drop_connection(self, code: int = 4000) -> None:
        """Close the live gateway connection from the server side (a resumable close code)."""
        conn = self._live_conn()
        if conn.session is not None and conn.session.conn is conn:
            conn.session.conn = None
        await conn.close(code, "fake dropped the connection")
        self._touch()

    def _live_conn(self) -> _GatewayConn:
        session = self._session
        if session is None or session.conn is None or not session.conn.open:
            raise RuntimeError("no live gateway connection")
        return session.conn

    # -- gateway: server ------------------------------------------------------------------

    async def _gateway_entry(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0, compress=False)
        await ws.prepare(request)
        q = request.query
        compress = q.get("compress")
        self._conn_counter += 1
        try:
            conn = _GatewayConn(ws, compress if compress in ("zlib-stream", "zstd-stream") else None,
                                request.path, self._conn_counter)
        except RuntimeError as exc:  # zstd asked for but unavailable here
            await ws.close(code=CLOSE_UNKNOWN_ERROR, message=str(exc)[:120].encode())
            return ws
        self.gateway_connections.append(conn)
        self._touch()
        if q.get("v") != str(API_VERSION):
            await conn.close(CLOSE_INVALID_API_VERSION, "Invalid API version")
        elif q.get("encoding", "json") != "json":
            await conn.close(CLOSE_DECODE_ERROR, "the fake only speaks encoding=json")
        elif compress is not None and compress not in ("zlib-stream", "zstd-stream"):
            await conn.close(CLOSE_DECODE_ERROR, "Invalid compression")
        else:
            await self._send(conn, {"op": OP_HELLO, "d": {"heartbeat_interval": self.heartbeat_interval,
                                                          "_trace": ["[\"gateway-fake-1\",{\"micros\":0.0}]"]},
                                    "s": None, "t": None})
            try:
                async for msg in ws:
                    if msg.type == WSMsgType.TEXT:
                        await self._on_gateway_text(conn, msg.data)
                    elif msg.type == WSMsgType.BINARY:
                        await conn.close(CLOSE_DECODE_ERROR, "Error while decoding payload.")
                    else:
                        break
                    if not conn.open:
                        break
            except (ConnectionError, asyncio.CancelledError):
                pass
        if conn.server_close_code is None:
            conn.client_close_code = ws.close_code
        self.close_codes.append(conn.client_close_code)
        session = conn.session
        if session is not None:
            if session.conn is conn:
                session.conn = None
            # A client that closes with 1000/1001 ends its session: it cannot RESUME it.
            if conn.client_close_code in (1000, 1001):
                session.resumable = False
        self._touch()
        return ws

    async def _on_gateway_text(self, conn: _GatewayConn, text: str) -> None:
        if len(text.encode()) > MAX_GATEWAY_PAYLOAD:
            await conn.close(CLOSE_DECODE_ERROR, "Error while decoding payload.")
            return
        try:
            payload = json.loads(text)
            op, d = payload["op"], payload.get("d")
        except (ValueError, KeyError, TypeError):
            await conn.close(CLOSE_DECODE_ERROR, "Error while decoding payload.")
            return
        self.gateway_received.append({"conn": conn.number, "op": op, "d": d})
        self._touch()
        if op == OP_HEARTBEAT:
            self.heartbeat_count += 1
            await self._send(conn, {"op": OP_HEARTBEAT_ACK, "d": None, "s": None, "t": None})
        elif op == OP_IDENTIFY:
            await self._on_identify(conn, d)
        elif op == OP_RESUME:
            await self._on_resume(conn, d)
        elif conn.session is None:
            await conn.close(CLOSE_NOT_AUTHENTICATED, "Not authenticated.")
        elif op == OP_PRESENCE:
            self.presence_updates.append(d)
        elif op == OP_REQUEST_MEMBERS:
            await self._on_request_members(conn, d)
        elif op in (OP_VOICE_STATE, OP_REQUEST_SOUNDBOARD):
            pass  # recorded in gateway_received
        else:
            await conn.close(CLOSE_UNKNOWN_OPCODE, "Unknown opcode.")

    async def _on_identify(self, conn: _GatewayConn, d: Any) -> None:
        if conn.session is not None:
            await conn.close(CLOSE_ALREADY_AUTHENTICATED, "Already authenticated.")
            return
        if not isinstance(d, dict) or not isinstance(d.get("properties"), dict):
            await conn.close(CLOSE_DECODE_ERROR, "Error while decoding payload.")
            return
        token = d.get("token")
        if isinstance(token, str) and token.startswith("Bot "):
            token = token[4:]
        if token != self.token:
            await conn.close(CLOSE_AUTHENTICATION_FAILED, "Authentication failed.")
            return
        intents = d.get("intents")
        if not isinstance(intents, int) or intents < 0 or intents & ~Intents.ALL:
            await conn.close(CLOSE_INVALID_INTENTS, "Invalid intent(s).")
            return
        if intents & Intents.PRIVILEGED & ~self.allowed_privileged_intents:
            await conn.close(CLOSE_DISALLOWED_INTENTS, "Disallowed intent(s).")
            return
        self.identify_count += 1
        self.identify_payloads.append(d)
        self.intents = intents
        if self._session is not None:
            self._session.resumable = False  # a new IDENTIFY starts a new session
        session = _Session(id=uuid.uuid4().hex, intents=intents, identify=d, conn=conn)
        self._sessions[session.id] = session
        self._session = session
        conn.session = session
        ready = {
            "v": API_VERSION,
            "user_settings": {},
            "user": self._me(),
            "session_type": "normal",
            "session_id": session.id,
            "resume_gateway_url": self.resume_gateway_url,
            "relationships": [],
            "private_channels": [],
            "presences": [],
            "guilds": [{"id": gid, "unavailable": True} for gid in self.guilds],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": ["fake-loopback"],
            "game_relationships": [],
            "auth": {},
            "application": {"id": self.application_id, "flags": self._application_flags()},
            "_trace": ["[\"gateway-fake-1\",{\"micros\":0.0}]"],
        }
        if d.get("shard") is not None:
            ready["shard"] = d["shard"]
        await self._send_dispatch(session, "READY", ready)
        if intents & Intents.GUILDS:
            for gid in self.guilds:
                await self._send_dispatch(session, "GUILD_CREATE", self._guild_create(gid, intents))
        self._touch()

    async def _on_resume(self, conn: _GatewayConn, d: Any) -> None:
        if conn.session is not None:
            await conn.close(CLOSE_ALREADY_AUTHENTICATED, "Already authenticated.")
            return
        if not isinstance(d, dict):
            await conn.close(CLOSE_DECODE_ERROR, "Error while decoding payload.")
            return
        token = d.get("token")
        if isinstance(token, str) and token.startswith("Bot "):
            token = token[4:]
        if token != self.token:
            await conn.close(CLOSE_AUTHENTICATION_FAILED, "Authentication failed.")
            return
        session = self._sessions.get(str(d.get("session_id")))
        seq = d.get("seq")
        if session is None or session is not self._session or not session.resumable or (
                session.conn is not None and session.conn.open):
            await self._send(conn, {"op": OP_INVALID_SESSION, "d": False, "s": None, "t": None})
            return
        if not isinstance(seq, int) or seq > session.seq:
            await conn.close(CLOSE_INVALID_SEQ, "Invalid seq.")
            return
        session.conn = conn
        conn.session = session
        self.resume_count += 1
        for payload in list(session.buffer):
            if payload["s"] > seq:
                await self._send(conn, payload)
        await self._send_dispatch(session, "RESUMED", {"_trace": ["[\"gateway-fake-1\",{\"micros\":0.0}]"]})
        self._touch()

    async def _on_request_members(self, conn: _GatewayConn, d: dict) -> None:
        gid = str(d.get("guild_id"))
        session = conn.session
        assert session is not None
        if gid not in self.guilds:
            return
        query, user_ids = d.get("query"), d.get("user_ids")
        if query == "" and not session.intents & Intents.GUILD_MEMBERS:
            await conn.close(CLOSE_DISALLOWED_INTENTS, "Disallowed intent(s).")
            return
        members = list(self.guilds[gid]["members"].values())
        if user_ids:
            wanted = {str(u) for u in (user_ids if isinstance(user_ids, list) else [user_ids])}
            members = [m for m in members if m["user"]["id"] in wanted]
        elif query:
            members = [m for m in members if m["user"]["username"].lower().startswith(query.lower())]
        limit = d.get("limit") or 0
        if limit:
            members = members[:limit]
        chunk = {"guild_id": gid, "members": members, "chunk_index": 0, "chunk_count": 1}
        if d.get("nonce") is not None:
            chunk["nonce"] = d["nonce"]
        if d.get("presences"):
            chunk["presences"] = []
        await self._send_dispatch(session, "GUILD_MEMBERS_CHUNK", chunk)

    def _guild_create(self, gid: str, intents: int) -> dict:
        g = self.guilds[gid]
        members = list(g["members"].values())
        if not intents & Intents.GUILD_MEMBERS:
            members = [m for m in members if m["user"]["id"] == self.bot_user_id]
        channels, threads = [], []
        for c in self.channels.values():
            if c.get("guild_id") == gid:
                # active threads come in their own list, with guild_id
                if self.is_thread(c["id"]):
                    threads.append(dict(c))
                else:
                    channels.append({k: v for k, v in c.items() if k != "guild_id"})
        data = dict(g["guild"])
        data.update({
            "roles": g["roles"],
            "joined_at": self.member(self.bot_user, gid)["joined_at"],
            "large": False,
            "unavailable": False,
            "member_count": len(g["members"]),
            "voice_states": [],
            "members": members,
            "channels": channels,
            "threads": threads,
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "lazy": True,
            "application_command_counts": {},
            "embedded_activities": [],
            "version": int(time.time() * 1000),
        })
        return data

    def _me(self) -> dict:
        me = dict(self.bot_user)
        me.update({"mfa_enabled": False, "locale": "en-US", "verified": True, "email": None, "premium_type": 0,
                   "bio": "", "bot": True})
        return me

    def _application_flags(self) -> int:
        flags = 1 << 23  # APPLICATION_COMMAND_BADGE
        if self.allowed_privileged_intents & Intents.GUILD_PRESENCES:
            flags |= 1 << 13  # GATEWAY_PRESENCE_LIMITED
        if self.allowed_privileged_intents & Intents.GUILD_MEMBERS:
            flags |= 1 << 15  # GATEWAY_GUILD_MEMBERS_LIMITED
        if self.allowed_privileged_intents & Intents.MESSAGE_CONTENT:
            flags |= 1 << 19  # GATEWAY_MESSAGE_CONTENT_LIMITED
        return flags

    # -- REST: test helpers ---------------------------------------------------------------

    def rate_limit(self, route_substring: str, times: int = 1, retry_after: float = 0.5, *,
                   method: Optional[str] = None, global_: bool = False, scope: str = "user") -> None:
        """Answer the next ``times`` requests whose path contains ``route_substring`` with 429."""
        self._rate_rules.append(_Rule(route_substring, method, times, retry_after=retry_after,
                                      global_=global_, scope="global" if global_ else scope))

    def hold(self, path: str, method: str = "GET") -> None:
        """Requests whose path starts with ``path`` (as the client sends it, e.g.
        "/api/v10/channels/1/messages", or an attachment's CDN path) wait unanswered until
        :meth:`release`: a client stuck mid-work, for a kill to land at a known point."""
        self._holds.setdefault((method.upper(), path), asyncio.Event())

    def release(self, path: str, method: str = "GET") -> None:
        held = self._holds.pop((method.upper(), path), None)
        if held is not None:
            held.set()

    def release_all(self) -> None:
        for method, path in list(self._holds):
            self.release(path, method)

    async def _wait_if_held(self, request: web.Request) -> None:
        held = next((ev for (method, path), ev in self._holds.items()
                     if method == request.method and request.path.startswith(path)), None)
        if held is not None:
            self.held.append(f"{request.method} {request.path}")
            self._touch()
            await held.wait()

    def fail_next(self, route_substring: str, status: int, body: Optional[dict] = None, *, times: int = 1,
                  method: Optional[str] = None) -> None:
        """Answer the next ``times`` matching requests with ``status`` / ``body`` (e.g. 403 50013, 500)."""
        if body is None:
            body = {"message": f"{status}: fake failure", "code": 0}
        self._faults.append(_Rule(route_substring, method, times, status=status, body=body))

    def find(self, method: Optional[str] = None, path_substring: str = "",
             predicate: Optional[Callable[[RecordedRequest], bool]] = None,
             status: Optional[int] = None) -> List[RecordedRequest]:
        """All recorded requests that match (does not consume them)."""
        return [r for r in self.requests if self._req_matches(r, method, path_substring, predicate, status)]

    @staticmethod
    def _req_matches(r: RecordedRequest, method: Optional[str], path_substring: str,
                     predicate: Optional[Callable[[RecordedRequest], bool]], status: Optional[int]) -> bool:
        if method is not None and r.method != method.upper():
            return False
        if path_substring not in r.path:
            return False
        if status is not None and r.status != status:
            return False
        return predicate is None or bool(predicate(r))

    async def wait_for(self, method: Optional[str], path_substring: str,
                       predicate: Optional[Callable[[RecordedRequest], bool]] = None,
                       timeout: float = 10.0, *, status: Optional[int] = None) -> RecordedRequest:
        """The earliest matching request not returned by an earlier ``wait_for``.

        Requests that arrived before the call count, so there is no race; each request
        is returned at most once, so two waits for the same route see two requests.
        """
        def check() -> Optional[RecordedRequest]:
            for r in self.requests:
                if r.index not in self._consumed and self._req_matches(r, method, path_substring, predicate, status):
                    self._consumed.add(r.index)
                    return r
            return None
        return await self._wait_until(check, timeout, f"{method or '*'} {path_substring!r}")

    def channel_messages(self, channel_id: Optional[str] = None) -> List[dict]:
        """Stored messages of a channel, oldest first (ephemeral ones excluded)."""
        cid = str(channel_id or self.channel_id)
        return [m for m in self.messages.values()
                if m["channel_id"] == cid and not m["flags"] & MessageFlags.EPHEMERAL]

    def sent_by_bot(self, channel_id: Optional[str] = None) -> List[dict]:
        return [m for m in self.messages.values() if m["author"]["id"] == self.bot_user_id
                and (channel_id is None or m["channel_id"] == str(channel_id))]

    def interaction_state(self, payload_or_token: Union[dict, str]) -> _Interaction:
        token = payload_or_token["token"] if isinstance(payload_or_token, dict) else payload_or_token
        return self.interactions[token]

    # -- REST: server ---------------------------------------------------------------------

    _ROUTES: List[Tuple[str, str, str, bool]] = [
        # (method, regex, handler, needs bot auth)
        ("GET", r"/users/@me", "_h_me", True),
        ("GET", r"/users/(?P<user_id>\d+)", "_h_user", True),
        ("GET", r"/guilds/(?P<guild_id>\d+)/members/(?P<user_id>\d+)", "_h_get_member", True),
        ("POST", r"/users/@me/channels", "_h_create_dm", True),
        ("GET", r"/oauth2/applications/@me", "_h_application", True),
        ("GET", r"/applications/@me", "_h_application", True),
        ("GET", r"/gateway", "_h_gateway", False),
        ("GET", r"/gateway/bot", "_h_gateway_bot", True),
        ("GET", r"/channels/(?P<channel_id>\d+)", "_h_get_channel", True),
        ("GET", r"/channels/(?P<channel_id>\d+)/messages", "_h_history", True),
        ("POST", r"/channels/(?P<channel_id>\d+)/messages", "_h_create_message", True),
        ("GET", r"/channels/(?P<channel_id>\d+)/messages/(?P<message_id>\d+)", "_h_get_message", True),
        ("PATCH", r"/channels/(?P<channel_id>\d+)/messages/(?P<message_id>\d+)", "_h_edit_message", True),
        ("DELETE", r"/channels/(?P<channel_id>\d+)/messages/(?P<message_id>\d+)", "_h_delete_message", True),
        ("PUT", r"/channels/(?P<channel_id>\d+)/messages/(?P<message_id>\d+)/reactions/(?P<emoji>[^/]+)/@me",
         "_h_reaction", True),
        ("DELETE", r"/channels/(?P<channel_id>\d+)/messages/(?P<message_id>\d+)/reactions/(?P<emoji>[^/]+)/@me",
         "_h_reaction", True),
        ("POST", r"/channels/(?P<channel_id>\d+)/messages/(?P<message_id>\d+)/threads", "_h_start_thread", True),
        ("POST", r"/channels/(?P<channel_id>\d+)/typing", "_h_typing", True),
        ("POST", r"/channels/(?P<channel_id>\d+)/attachments", "_h_upload_slots", True),
        ("GET", r"/applications/(?P<application_id>\d+)/commands", "_h_get_commands", True),
        ("PUT", r"/applications/(?P<application_id>\d+)/commands", "_h_put_commands", True),
        ("POST", r"/applications/(?P<application_id>\d+)/commands", "_h_post_command", True),
        ("GET", r"/applications/(?P<application_id>\d+)/guilds/(?P<guild_id>\d+)/commands", "_h_get_commands", True),
        ("PUT", r"/applications/(?P<application_id>\d+)/guilds/(?P<guild_id>\d+)/commands", "_h_put_commands", True),
        ("POST", r"/applications/(?P<application_id>\d+)/guilds/(?P<guild_id>\d+)/commands", "_h_post_command",
         True),
        ("POST", r"/interactions/(?P<interaction_id>\d+)/(?P<token>[^/]+)/callback", "_h_callback", False),
        ("POST", r"/webhooks/(?P<webhook_id>\d+)/(?P<token>[^/]+)", "_h_followup", False),
        ("PATCH", r"/webhooks/(?P<webhook_id>\d+)/(?P<token>[^/]+)", "_h_modify_webhook", False),
        ("GET", r"/webhooks/(?P<webhook_id>\d+)/(?P<token>[^/]+)/messages/(?P<message_id>@original|\d+)",
         "_h_webhook_message", False),
        ("PATCH", r"/webhooks/(?P<webhook_id>\d+)/(?P<token>[^/]+)/messages/(?P<message_id>@original|\d+)",
         "_h_webhook_message", False),
        ("DELETE", r"/webhooks/(?P<webhook_id>\d+)/(?P<token>[^/]+)/messages/(?P<message_id>@original|\d+)",
         "_h_webhook_message", False),
    ]
    _COMPILED = [(m, re.compile(rx + r"\Z"), h, a) for m, rx, h, a in _ROUTES]

    def _route_template(self, regex: re.Pattern, method: str) -> str:
        t = regex.pattern[:-2]
        t = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: "{" + m.group(1) + "}", t)
        t = t.replace("{token}", "{webhook_token}").replace("{interaction_id}/{webhook_token}",
                                                            "{interaction_id}/{interaction_token}")
        return f"{method} {t}"

    async def _api_entry(self, request: web.Request) -> web.StreamResponse:
        rec = RecordedRequest(index=len(self.requests), method=request.method, path=request.path,
                              query=dict(request.query), headers=dict(request.headers))
        try:
            resp = await self._api_dispatch(request, rec)
        except _HTTPError as exc:
            resp = self._api_response(exc.status, exc.body, exc.headers)
            rec.response = exc.body
        rec.status = resp.status
        self.requests.append(rec)
        self._touch()
        return resp

    def _api_response(self, status: int, body: Any, headers: Optional[Dict[str, str]] = None) -> web.Response:
        h = {"Via": "1.1 google"}
        h.update(headers or {})
        if status == 204 or body is None:
            return web.Response(status=status, headers=h)
        if isinstance(body, (bytes, str)):
            return web.Response(status=status, body=body if isinstance(body, bytes) else body.encode(),
                                headers={**h, "Content-Type": "text/plain"})
        return _json_response(body, status, h)

    async def _api_dispatch(self, request: web.Request, rec: RecordedRequest) -> web.Response:
        if request.match_info["version"] != str(API_VERSION):
            raise _error(404, ErrorCode.GENERAL, "404: Not Found")
        sub = "/" + request.match_info["tail"]
        method = request.method
        found = None
        path_matched = False
        for m, rx, handler, auth in self._COMPILED:
            match = rx.match(sub)
            if match:
                path_matched = True
                if m == method:
                    found = (rx, handler, auth, match.groupdict())
                    break
        if found is None:
            if path_matched:
                raise _error(405, ErrorCode.GENERAL, "405: Method Not Allowed")
            raise _error(404, ErrorCode.GENERAL, "404: Not Found")
        rx, handler, needs_auth, params = found
        # Body first, so that even refused requests are recorded with what they carried.
        body = await self._read_body(request, rec)
        # a held request was received whole (as Discord would have it), whatever its client does next
        await self._wait_if_held(request)
        if needs_auth:
            if request.headers.get("Authorization") != f"Bot {self.token}":
                raise _error(401, ErrorCode.GENERAL, "401: Unauthorized")
            if self.require_user_agent and not request.headers.get("User-Agent", "").startswith("DiscordBot"):
                # Cloudflare in front of Discord refuses clients without a proper User-Agent.
                raise _HTTPError(403, "error code: 1010")
        for rule in self._faults:
            if rule.matches(method, request.path):
                rule.times -= 1
                raise _HTTPError(rule.kw["status"], rule.kw["body"])
        template = self._route_template(rx, method)
        major = params.get("channel_id") or params.get("guild_id") or (
            f"{params.get('webhook_id')}+{params.get('token')}" if params.get("webhook_id") else "")
        bucket_headers = self._take_bucket(template, major, method, request.path)
        status, data = await getattr(self, handler)(request, params, body, rec)
        rec.response = data
        return self._api_response(status, data, bucket_headers)

    def _take_bucket(self, template: str, major: str, method: str, path: str) -> Dict[str, str]:
        now = time.time()
        limit, per = self.bucket_config.get(template, self.bucket_config["default"])
        key = f"{template}:{major}"
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(template, limit, per)
        for rule in self._rate_rules:
            if rule.matches(method, path):
                rule.times -= 1
                raise self._too_many(rule.kw["retry_after"], rule.kw["global_"], rule.kw["scope"], template,
                                     bucket)
        if now >= bucket.reset_at:
            bucket.remaining, bucket.reset_at = bucket.limit, now + bucket.per
        if bucket.remaining <= 0:
            raise self._too_many(round(bucket.reset_at - now, 3), False, "user", template, bucket)
        bucket.remaining -= 1
        return {
            "X-RateLimit-Bucket": bucket.hash,
            "X-RateLimit-Limit": str(bucket.limit),
            "X-RateLimit-Remaining": str(bucket.remaining),
            "X-RateLimit-Reset": f"{bucket.reset_at:.3f}",
            "X-RateLimit-Reset-After": f"{bucket.reset_at - now:.3f}",
        }

    def _too_many(self, retry_after: float, global_: bool, scope: str, template: str,
                  bucket: Optional[_Bucket] = None) -> _HTTPError:
        # https://discord.com/developers/docs/topics/rate-limits#exceeding-a-rate-limit
        now = time.time()
        headers = {
            "Retry-After": str(max(1, math.ceil(retry_after))),
            "X-RateLimit-Scope": scope,
        }
        if global_:
            headers["X-RateLimit-Global"] = "true"
        else:
            b = bucket or _Bucket(template, 1, retry_after)
            headers.update({
                "X-RateLimit-Bucket": b.hash,
                "X-RateLimit-Limit": str(b.limit),
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": f"{now + retry_after:.3f}",
                "X-RateLimit-Reset-After": f"{retry_after:.3f}",
            })
        body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": global_}
        if global_:
            body["code"] = 0
        return _HTTPError(429, body, headers)

    async def _read_body(self, request: web.Request, rec: RecordedRequest) -> Any:
        """JSON or multipart (payload_json + files[n]); anything else counts as no body."""
        if not request.can_read_body:
            return None
        ctype = request.content_type
        if ctype == "application/json":
            raw = await request.read()
            try:
                rec.json = json.loads(raw) if raw else None
            except ValueError:
                raise _error(400, ErrorCode.INVALID_JSON, "The request body contains invalid JSON.")
            return rec.json
        if ctype == "multipart/form-data":
            reader = await request.multipart()
            payload: Any = None
            while True:
                part = await reader.next()
                if part is None:
                    break
                data = await part.read(decode=False)  # type: ignore[union-attr]
                name = part.name or ""  # type: ignore[union-attr]
                if name == "payload_json":
                    try:
                        payload = json.loads(data)
                    except ValueError:
                        raise _error(400, ErrorCode.INVALID_JSON, "The request body contains invalid JSON.")
                elif part.filename is not None:  # type: ignore[union-attr]
                    rec.files.append(RecordedFile(name, part.filename,  # type: ignore[union-attr]
                                                  part.headers.get("Content-Type"), bytes(data)))  # type: ignore
            rec.json = payload
            return payload if payload is not None else {}
        rec.raw = await request.read()
        return None

    # -- REST handlers --------------------------------------------------------------------

    async def _h_me(self, request, params, body, rec):
        return 200, self._me()

    async def _h_user(self, request, params, body, rec):
        user = self.users.get(params["user_id"])
        if user is None:
            raise _error(404, ErrorCode.UNKNOWN_USER, "Unknown User")
        return 200, user

    async def _h_get_member(self, request, params, body, rec):
        # https://discord.com/developers/docs/resources/guild#get-guild-member: a guild member
        # object, with its user
        guild = self.guilds.get(params["guild_id"])
        if guild is None:
            raise _error(404, ErrorCode.UNKNOWN_GUILD, "Unknown Guild")
        member = guild["members"].get(params["user_id"])
        if member is None:
            raise _error(404, ErrorCode.UNKNOWN_MEMBER, "Unknown Member")
        return 200, member

    async def _h_create_dm(self, request, params, body, rec):
        rid = str((body or {}).get("recipient_id", ""))
        user = self.users.get(rid)
        if user is None:
            raise _form_error(["recipient_id"], "NUMBER_TYPE_COERCE", f"Value \"{rid}\" is not snowflake.")
        return 200, self.add_dm_channel(user)

    async def _h_application(self, request, params, body, rec):
        owner = self.user
        return 200, {
            "id": self.application_id,
            "name": self.bot_user["username"],
            "icon": None,
            "description": "Confab test application",
            "summary": "",
            "type": None,
            "is_monetized": False,
            "is_verified": False,
            "is_discoverable": False,
            "bot_public": True,
            "bot_require_code_grant": False,
            "verify_key": hashlib.sha256(self.application_id.encode()).hexdigest(),
            "flags": self._application_flags(),
            "hook": True,
            "redirect_uris": [],
            "interactions_endpoint_url": None,
            "role_connections_verification_url": None,
            "owner": owner,
            "team": None,
            "approximate_guild_count": len(self.guilds),
            "approximate_user_install_count": 0,
            "tags": [],
            "install_params": {"scopes": ["bot", "applications.commands"], "permissions": str(BOT_PERMISSIONS)},
            "integration_types_config": {"0": {"oauth2_install_params": {
                "scopes": ["bot", "applications.commands"], "permissions": str(BOT_PERMISSIONS)}}, "1": {}},
            "bot": self.bot_user,
        }

    async def _h_gateway(self, request, params, body, rec):
        return 200, {"url": self.gateway_url}

    async def _h_gateway_bot(self, request, params, body, rec):
        return 200, {"url": self.gateway_url, "shards": 1, "session_start_limit": {
            "total": 1000, "remaining": 1000 - self.identify_count, "reset_after": 86400000, "max_concurrency": 1}}

    async def _h_get_channel(self, request, params, body, rec):
        return 200, self._channel_or_404(params["channel_id"])

    def _visible_message(self, msg: dict) -> dict:
        # REST follows the application's approval for MESSAGE_CONTENT, not the gateway intents.
        intents = Intents.MESSAGE_CONTENT if self.allowed_privileged_intents & Intents.MESSAGE_CONTENT else 0
        return self._blank_content(msg, intents)

    async def _h_history(self, request, params, body, rec):
        channel = self._channel_or_404(params["channel_id"])
        q = request.query
        try:
            limit = int(q.get("limit", "50"))
        except ValueError:
            raise _form_error(["limit"], "NUMBER_TYPE_COERCE", "Value is not int.")
        if not 1 <= limit <= 100:
            raise _form_error(["limit"], "NUMBER_TYPE_MAX" if limit > 100 else "NUMBER_TYPE_MIN",
                              "int value should be between 1 and 100.")
        msgs = self.channel_messages(channel["id"])
        ids = [int(m["id"]) for m in msgs]
        if "before" in q:
            msgs = [m for m, i in zip(msgs, ids) if i < int(q["before"])][-limit:]
        elif "after" in q:
            msgs = [m for m, i in zip(msgs, ids) if i > int(q["after"])][:limit]
        elif "around" in q:
            center = int(q["around"])
            older = [m for m, i in zip(msgs, ids) if i < center][-(limit // 2):] if limit > 1 else []
            rest = [m for m, i in zip(msgs, ids) if i >= center][:limit - len(older)]
            msgs = older + rest
        else:
            msgs = msgs[-limit:]
        return 200, [self._visible_message(m) for m in reversed(msgs)]

    def _message_in_channel(self, channel_id: str, message_id: str) -> dict:
        self._channel_or_404(channel_id)
        msg = self.messages.get(message_id)
        if msg is None or msg["channel_id"] != channel_id or msg["flags"] & MessageFlags.EPHEMERAL:
            raise _error(404, ErrorCode.UNKNOWN_MESSAGE, "Unknown Message")
        return msg

    async def _h_get_message(self, request, params, body, rec):
        return 200, self._visible_message(self._message_in_channel(params["channel_id"], params["message_id"]))

    async def _h_create_message(self, request, params, body, rec):
        channel = self._channel_or_404(params["channel_id"])
        body = body or {}
        if self.is_thread(channel["id"]) and not self._member_permissions(channel["guild_id"], self.bot_user_id) \
                & _P_SEND_IN_THREADS:
            raise _error(403, ErrorCode.MISSING_PERMISSIONS, "Missing Permissions")
        fields = self._validate_message(body, rec.files, channel["id"])
        msg = self._make_message(channel["id"], self.bot_user, **fields)
        await self._echo("MESSAGE_CREATE", msg)
        return 200, msg

    async def _h_start_thread(self, request, params, body, rec):
        parent = self._channel_or_404(params["channel_id"])
        message = self._message_in_channel(parent["id"], params["message_id"])
        if parent.get("guild_id") and not self._member_permissions(parent["guild_id"], self.bot_user_id) \
                & _P_CREATE_PUBLIC_THREADS:
            raise _error(403, ErrorCode.MISSING_PERMISSIONS, "Missing Permissions")
        thread = self._new_thread(parent, message, self.bot_user, body)
        await self._thread_created(thread)
        return 200, thread

    async def _h_edit_message(self, request, params, body, rec):
        msg = self._message_in_channel(params["channel_id"], params["message_id"])
        if msg["author"]["id"] != self.bot_user_id:
            raise _error(403, ErrorCode.CANNOT_EDIT_OTHERS_MESSAGE, "Cannot edit a message authored by another user")
        self._apply_edit(msg, body or {}, rec.files)
        await self._echo("MESSAGE_UPDATE", msg)
        return 200, msg

    async def _h_delete_message(self, request, params, body, rec):
        msg = self._message_in_channel(params["channel_id"], params["message_id"])
        channel = self.channels[msg["channel_id"]]
        if msg["author"]["id"] != self.bot_user_id and channel["type"] == 1:
            raise _error(403, ErrorCode.CANNOT_EXECUTE_ON_DM, "Cannot execute action on a DM channel")
        await self._delete_message(msg)
        return 204, None

    async def _delete_message(self, msg: dict) -> None:
        del self.messages[msg["id"]]
        channel = self.channels[msg["channel_id"]]
        data = {"id": msg["id"], "channel_id": msg["channel_id"]}
        if channel.get("guild_id"):
            data["guild_id"] = channel["guild_id"]
        if not msg["flags"] & MessageFlags.EPHEMERAL:
            await self._echo_raw("MESSAGE_DELETE", data)

    async def _h_reaction(self, request, params, body, rec):
        self._message_in_channel(params["channel_id"], params["message_id"])
        self.reactions.append((request.method, params["channel_id"], params["message_id"], params["emoji"]))
        return 204, None

    async def _h_typing(self, request, params, body, rec):
        self._channel_or_404(params["channel_id"])
        self.typing.append(params["channel_id"])
        return 204, None

    async def _h_upload_slots(self, request, params, body, rec):
        """POST /channels/{id}/attachments: the upload-URL flow Discord's clients use for
        voice messages (not in the public docs).  Answers loopback ``upload_url``s."""
        self._channel_or_404(params["channel_id"])
        files = (body or {}).get("files")
        if not isinstance(files, list) or not files:
            raise _form_error(["files"], "BASE_TYPE_REQUIRED", "This field is required")
        out = []
        for i, f in enumerate(files):
            if not isinstance(f, dict) or not f.get("filename") or not isinstance(f.get("file_size"), int):
                raise _form_error(["files", i], "BASE_TYPE_REQUIRED", "filename and file_size are required")
            if f["file_size"] > self.upload_limit:
                raise _error(413, ErrorCode.REQUEST_ENTITY_TOO_LARGE, "Request entity too large")
            upload_filename = f"{uuid.uuid4()}/{f['filename']}"
            self.uploads[upload_filename] = _Upload(upload_filename, f["filename"], f["file_size"])
            out.append({"id": int(f.get("id", i)) if str(f.get("id", i)).isdigit() else f.get("id"),
                        "upload_url": f"{self.base_url}/upload/{upload_filename}?upload_id={secrets.token_hex(16)}",
                        "upload_filename": upload_filename})
        return 200, {"attachments": out}

    async def _upload_entry(self, request: web.Request) -> web.Response:
        data = await request.read()
        rec = RecordedRequest(index=len(self.requests), method=request.method, path=request.path,
                              query=dict(request.query), headers=dict(request.headers), raw=data)
        upload = self.uploads.get(request.match_info["upload_filename"])
        if upload is None or "upload_id" not in request.query:
            rec.status = 404
            resp = web.Response(status=404, text="No such upload.")
        elif len(data) != upload.file_size:
            rec.status = 400
            resp = web.Response(status=400, text="Content length does not match the declared file_size.")
        else:
            upload.data = data
            rec.status = 200
            resp = web.Response(status=200)
        self.requests.append(rec)
        self._touch()
        return resp

    async def _cdn_entry(self, request: web.Request) -> web.Response:
        await self._wait_if_held(request)
        rec = RecordedRequest(index=len(self.requests), method=request.method, path=request.path,
                              query=dict(request.query), headers=dict(request.headers))
        mi = request.match_info
        path = f"/attachments/{mi['channel_id']}/{mi['attachment_id']}/{mi['filename']}"
        q = request.query
        stored = self.attachments.get(mi["attachment_id"])
        redirect = self.attachment_redirects.pop(mi["attachment_id"], None)
        if redirect is not None:
            rec.status = 302
            self.requests.append(rec)
            self._touch()
            return web.Response(status=302, headers={"Location": redirect})
        ok = False
        if stored is not None and stored.channel_id == mi["channel_id"] and stored.filename == mi["filename"]:
            ex, is_, hm = q.get("ex", ""), q.get("is", ""), q.get("hm", "")
            want = hmac.new(self._secret, f"{path}|{ex}|{is_}".encode(), hashlib.sha256).hexdigest()
            try:
                ok = hmac.compare_digest(want, hm) and int(ex, 16) > time.time()
            except ValueError:
                ok = False
        if not ok:
            rec.status = 404
            resp = web.Response(status=404, text="This content is no longer available.")
        else:
            assert stored is not None
            rec.status = 200
            resp = web.Response(status=200, body=stored.data, headers={"Content-Type": stored.content_type})
        self.requests.append(rec)
        self._touch()
        return resp

    # -- message validation ---------------------------------------------------------------

    def _validate_message(self, body: dict, files: List[RecordedFile], channel_id: str, *,
                          existing: Optional[dict] = None, interaction: bool = False) -> Dict[str, Any]:
        """Validate a create-message body as Discord does; return ``_make_message`` fields."""
        if not isinstance(body, dict):
            raise _form_error([], "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
        content = body.get("content")
        if content is not None and not isinstance(content, str):
            raise _form_error(["content"], "BASE_TYPE_STRING", "Must be a string.")
        content = content or ""
        if len(content) > MAX_CONTENT:
            raise _form_error(["content"], "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CONTENT} or fewer in length.")
        embeds = body.get("embeds") or []
        self._validate_embeds(embeds)
        components = body.get("components") or []
        if not isinstance(components, list) or len(components) > 40:
            raise _form_error(["components"], "BASE_TYPE_MAX_LENGTH", "Must be 40 or fewer in length.")
        for i, comp in enumerate(components):
            if not isinstance(comp, dict) or "type" not in comp:
                raise _form_error(["components", i, "type"], "BASE_TYPE_REQUIRED", "This field is required")
        for comp in _walk_components(components):
            if comp.get("custom_id") is not None and len(str(comp["custom_id"])) > 100:
                raise _form_error(["components"], "BASE_TYPE_MAX_LENGTH", "custom_id: Must be 100 or fewer in length.")
        flags = body.get("flags") or 0
        if not isinstance(flags, int):
            raise _form_error(["flags"], "NUMBER_TYPE_COERCE", "Value is not int.")
        allowed = MessageFlags.SUPPRESS_EMBEDS | MessageFlags.SUPPRESS_NOTIFICATIONS | \
            MessageFlags.IS_VOICE_MESSAGE | MessageFlags.IS_COMPONENTS_V2
        if interaction:
            allowed |= MessageFlags.EPHEMERAL
        flags &= allowed  # Discord ignores flags a message cannot be created with
        attachments = self._resolve_attachments(body, files, channel_id, existing=existing,
                                                ephemeral=bool(flags & MessageFlags.EPHEMERAL))
        stickers = body.get("sticker_ids") or []
        poll = body.get("poll")
        if flags & MessageFlags.IS_VOICE_MESSAGE:
            self._validate_voice(content, embeds, stickers, poll, components, attachments)
        if not content.strip() and not embeds and not attachments and not stickers and not components and not poll:
            raise _error(400, ErrorCode.EMPTY_MESSAGE, "Cannot send an empty message")
        reference = body.get("message_reference")
        if reference is not None:
            ref_id = str(reference.get("message_id"))
            target = self.messages.get(ref_id)
            ok = target is not None and not target["flags"] & MessageFlags.EPHEMERAL and (
                target["channel_id"] == channel_id
                or self.channels.get(target["channel_id"], {}).get("guild_id") ==
                self.channels.get(channel_id, {}).get("guild_id") is not None)
            if not ok:
                if reference.get("fail_if_not_exists", True):
                    raise _form_error(["message_reference"], "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message")
                reference = None
        return {
            "content": content,
            "embeds": [dict(e, type=e.get("type", "rich")) for e in embeds],
            "components": components,
            "flags": flags,
            "attachments": attachments,
            "message_reference": reference,
            "nonce": body.get("nonce"),
            "tts": bool(body.get("tts")),
            "poll": poll,
            "allowed_mentions": self._validate_allowed_mentions(body.get("allowed_mentions")),
        }

    @staticmethod
    def _validate_embeds(embeds: Any) -> None:
        if not isinstance(embeds, list):
            raise _form_error(["embeds"], "LIST_TYPE_CONVERT", "Only iterables may be used in a ListType")
        if len(embeds) > 10:
            raise _form_error(["embeds"], "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
        total = 0
        limits = {"title": 256, "description": 4096}
        for i, e in enumerate(embeds):
            if not isinstance(e, dict):
                raise _form_error(["embeds", i], "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
            for key, limit in limits.items():
                value = e.get(key) or ""
                total += len(value)
                if len(value) > limit:
                    raise _form_error(["embeds", i, key], "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")
            fields = e.get("fields") or []
            if len(fields) > 25:
                raise _form_error(["embeds", i, "fields"], "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
            for f in fields:
                total += len(f.get("name") or "") + len(f.get("value") or "")
            total += len((e.get("footer") or {}).get("text") or "") + len((e.get("author") or {}).get("name") or "")
        if total > 6000:
            raise _form_error(["embeds"], "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000")

    def _resolve_attachments(self, body: dict, files: List[RecordedFile], channel_id: str, *,
                             existing: Optional[dict], ephemeral: bool) -> List[dict]:
        by_index: Dict[str, RecordedFile] = {}
        for f in files:
            m = re.fullmatch(r"files\[(\d+)\]", f.field)
            key = m.group(1) if m else ("0" if f.field == "file" else f.field)
            by_index[key] = f
        if len(files) > 10:
            raise _form_error(["files"], "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
        if sum(len(f.data) for f in files) > self.upload_limit:
            raise _error(413, ErrorCode.REQUEST_ENTITY_TOO_LARGE, "Request entity too large")
        entries = body.get("attachments")
        kept_existing = {a["id"]: a for a in (existing or {}).get("attachments", [])}
        result: List[dict] = []
        used: set = set()
        if entries is None:
            result = list(kept_existing.values())
            entries = []
        if not isinstance(entries, list):
            raise _form_error(["attachments"], "LIST_TYPE_CONVERT", "Only iterables may be used in a ListType")
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or "id" not in entry:
                raise _form_error(["attachments", i, "id"], "BASE_TYPE_REQUIRED", "This field is required")
            aid = str(entry["id"])
            extra = {k: entry[k] for k in ("description", "duration_secs", "waveform", "title") if k in entry}
            if aid in by_index:
                f = by_index[aid]
                used.add(aid)
                result.append(self._new_attachment(f.data, entry.get("filename") or f.filename or "file", channel_id,
                                                   ephemeral, extra))
            elif entry.get("uploaded_filename"):
                upload = self.uploads.get(entry["uploaded_filename"])
                if upload is None or upload.data is None:
                    raise _error(400, ErrorCode.UPLOADED_FILE_NOT_FOUND, "Uploaded file not found.")
                del self.uploads[entry["uploaded_filename"]]
                result.append(self._new_attachment(upload.data, entry.get("filename") or upload.filename,
                                                   channel_id, ephemeral, extra))
            elif aid in kept_existing:
                result.append(kept_existing[aid])
            else:
                raise _form_error(["attachments", i, "id"], "ATTACHMENT_NOT_FOUND", "Unknown attachment")
        for key, f in by_index.items():
            if key not in used:
                result.append(self._new_attachment(f.data, f.filename or "file", channel_id, ephemeral, {}))
        if len(result) > 10:
            raise _form_error(["attachments"], "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
        return result

    def _new_attachment(self, data: bytes, filename: str, channel_id: str, ephemeral: bool, extra: dict) -> dict:
        ctype = _guess_content_type(filename)
        if not ctype.startswith("audio/"):
            # duration_secs / waveform are only kept for audio (docs: the attachment's
            # Content-Type must begin with audio/ for them to be respected).
            extra = {k: v for k, v in extra.items() if k not in ("duration_secs", "waveform")}
        att = self.add_attachment(data, filename, ctype, channel_id=channel_id, **extra)
        if ephemeral:
            att["ephemeral"] = True
        return att

    @staticmethod
    def _validate_voice(content: str, embeds: list, stickers: list, poll: Any, components: list,
                        attachments: List[dict]) -> None:
        # https://discord.com/developers/docs/resources/message#voice-messages
        if content or embeds or stickers or poll or components:
            raise _error(400, ErrorCode.VOICE_MESSAGE_ADDITIONAL_CONTENT,
                         "Voice messages do not support additional content.")
        if len(attachments) != 1 or not attachments[0].get("content_type", "").startswith("audio/"):
            raise _error(400, ErrorCode.VOICE_MESSAGE_SINGLE_AUDIO_ATTACHMENT,
                         "Voice messages must have a single audio attachment.")
        att = attachments[0]
        if att.get("duration_secs") is None or att.get("waveform") is None:
            raise _error(400, ErrorCode.VOICE_MESSAGE_METADATA, "Voice messages must have supporting metadata.")
        if not isinstance(att["duration_secs"], (int, float)) or att["duration_secs"] <= 0:
            raise _form_error(["attachments", 0, "duration_secs"], "NUMBER_TYPE_COERCE", "Value is not a number.")
        try:
            wave = base64.b64decode(att["waveform"], validate=True)
        except (ValueError, TypeError):
            raise _form_error(["attachments", 0, "waveform"], "BASE_TYPE_BAD_BASE64", "Invalid base64.")
        if not wave or len(wave) > 256:
            # Discord's clients never send more than 256 samples; the fake refuses it.
            raise _form_error(["attachments", 0, "waveform"], "BASE_TYPE_MAX_LENGTH",
                              "Waveform must be 1 to 256 samples.")

    def _apply_edit(self, msg: dict, body: dict, files: List[RecordedFile], *, interaction: bool = False) -> None:
        if msg["flags"] & MessageFlags.IS_VOICE_MESSAGE:
            raise _error(400, ErrorCode.VOICE_MESSAGE_CANNOT_BE_EDITED, "Voice messages cannot be edited.")
        if not isinstance(body, dict):
            raise _form_error([], "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
        merged = {
            "content": msg["content"],
            "embeds": msg["embeds"],
            "components": msg["components"],
            "flags": msg["flags"] & ~(MessageFlags.LOADING | MessageFlags.EPHEMERAL),
            "sticker_ids": [s["id"] for s in msg.get("sticker_items", [])],
        }
        for key in ("content", "embeds", "components", "flags", "attachments", "poll"):
            if key in body:
                merged[key] = body[key]
        if "flags" in body and isinstance(body["flags"], int):
            # Only SUPPRESS_EMBEDS can be toggled on an existing message (voice flag can't be added).
            keep = msg["flags"] & ~MessageFlags.SUPPRESS_EMBEDS & ~MessageFlags.LOADING & ~MessageFlags.EPHEMERAL
            merged["flags"] = keep | (body["flags"] & MessageFlags.SUPPRESS_EMBEDS)
            if body["flags"] & MessageFlags.IS_VOICE_MESSAGE:
                raise _error(400, ErrorCode.VOICE_MESSAGE_CANNOT_BE_EDITED, "Voice messages cannot be edited.")
        fields = self._validate_message(merged, files, msg["channel_id"], existing=msg, interaction=interaction)
        keep_flags = msg["flags"] & MessageFlags.EPHEMERAL
        msg.update({
            "content": fields["content"],
            "embeds": fields["embeds"],
            "components": fields["components"],
            "attachments": fields["attachments"],
            "flags": fields["flags"] | keep_flags,
            "edited_timestamp": _iso(int(time.time() * 1000)),
        })
        msg["mentions"] = self._parse_mentions(msg["content"], self.channels[msg["channel_id"]])

    async def _echo(self, event: str, msg: dict) -> None:
        if msg["flags"] & MessageFlags.EPHEMERAL:
            return
        await self._echo_raw(event, self._gateway_message(msg))

    async def _echo_raw(self, event: str, data: dict) -> None:
        """The gateway event Discord sends about the bot's own REST action."""
        if not self.echo_own_messages or self._session is None:
            return
        await self.dispatch(event, data)

    # -- application commands -------------------------------------------------------------

    def _check_app(self, params: dict) -> Optional[str]:
        if params["application_id"] != self.application_id:
            raise _error(403, ErrorCode.MISSING_ACCESS, "Missing Access")
        gid = params.get("guild_id")
        if gid is not None and gid not in self.guilds:
            raise _error(403, ErrorCode.MISSING_ACCESS, "Missing Access")
        return gid

    async def _h_get_commands(self, request, params, body, rec):
        gid = self._check_app(params)
        return 200, (self.guild_commands.get(gid, []) if gid else self.global_commands)

    async def _h_put_commands(self, request, params, body, rec):
        gid = self._check_app(params)
        if not isinstance(body, list):
            raise _form_error([], "LIST_TYPE_CONVERT", "Only iterables may be used in a ListType")
        if len(body) > 100:
            raise _form_error([], "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")
        current = self.guild_commands.get(gid, []) if gid else self.global_commands
        old = {(c["name"], c.get("type", 1)): c for c in current}
        result, seen = [], set()
        for i, cmd in enumerate(body):
            self._validate_command(cmd, [i])
            key = (cmd["name"], cmd.get("type", 1))
            if key in seen:
                raise _form_error([i, "name"], "APPLICATION_COMMANDS_DUPLICATE_NAME",
                                  f"Application command names must be unique")
            seen.add(key)
            result.append(self._command_object(cmd, gid, old.get(key)))
        if gid:
            self.guild_commands[gid] = result
        else:
            self.global_commands = result
        return 200, result

    async def _h_post_command(self, request, params, body, rec):
        gid = self._check_app(params)
        self._validate_command(body, [])
        pool = self.guild_commands.setdefault(gid, []) if gid else self.global_commands
        existing = next((c for c in pool if c["name"] == body["name"] and c["type"] == body.get("type", 1)), None)
        cmd = self._command_object(body, gid, existing)
        if existing is not None:
            pool[pool.index(existing)] = cmd
            return 200, cmd
        pool.append(cmd)
        return 201, cmd

    def _validate_command(self, cmd: Any, path: List[Union[str, int]]) -> None:
        # https://discord.com/developers/docs/interactions/application-commands#application-command-object
        if not isinstance(cmd, dict):
            raise _form_error(path, "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
        ctype = cmd.get("type", 1)
        name = cmd.get("name")
        if not isinstance(name, str) or not 1 <= len(name) <= 32:
            raise _form_error(path + ["name"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 32 in length.")
        if ctype == 1:
            if not re.fullmatch(r"[-_'\w]{1,32}", name) or name != name.lower():
                raise _form_error(path + ["name"], "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
            desc = cmd.get("description")
            if not isinstance(desc, str) or not 1 <= len(desc) <= 100:
                raise _form_error(path + ["description"], "BASE_TYPE_BAD_LENGTH",
                                  "Must be between 1 and 100 in length.")
        elif cmd.get("description"):
            raise _form_error(path + ["description"], "APPLICATION_COMMAND_CONTEXT_MENU_DESCRIPTION",
                              "Context menu commands cannot have description")
        self._validate_options(cmd.get("options") or [], path + ["options"])

    def _validate_options(self, options: Any, path: List[Union[str, int]]) -> None:
        if not isinstance(options, list) or len(options) > 25:
            raise _form_error(path, "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
        seen_optional = False
        names = set()
        for i, opt in enumerate(options):
            if not isinstance(opt, dict) or not isinstance(opt.get("type"), int):
                raise _form_error(path + [i, "type"], "BASE_TYPE_REQUIRED", "This field is required")
            name, desc = opt.get("name"), opt.get("description")
            if not isinstance(name, str) or not re.fullmatch(r"[-_'\w]{1,32}", name) or name != name.lower():
                raise _form_error(path + [i, "name"], "APPLICATION_COMMAND_INVALID_NAME", "Option name is invalid")
            if name in names:
                raise _form_error(path + [i, "name"], "APPLICATION_COMMAND_OPTIONS_NAME_ALREADY_EXISTS",
                                  "Option names must be unique")
            names.add(name)
            if not isinstance(desc, str) or not 1 <= len(desc) <= 100:
                raise _form_error(path + [i, "description"], "BASE_TYPE_BAD_LENGTH",
                                  "Must be between 1 and 100 in length.")
            if opt["type"] in (1, 2):
                self._validate_options(opt.get("options") or [], path + [i, "options"])
            elif opt.get("required"):
                if seen_optional:
                    raise _form_error(path, "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                                      "Required options must be placed before non-required options")
            else:
                seen_optional = True

    def _command_object(self, cmd: dict, gid: Optional[str], old: Optional[dict]) -> dict:
        out = {
            "id": old["id"] if old else self._snowflake(),
            "application_id": self.application_id,
            "version": self._snowflake(),
            "default_member_permissions": cmd.get("default_member_permissions"),
            "type": cmd.get("type", 1),
            "name": cmd["name"],
            "name_localizations": cmd.get("name_localizations"),
            "description": cmd.get("description", ""),
            "description_localizations": cmd.get("description_localizations"),
            "dm_permission": cmd.get("dm_permission", True),
            "nsfw": cmd.get("nsfw", False),
        }
        if cmd.get("options"):
            out["options"] = cmd["options"]
        if gid:
            out["guild_id"] = gid
        else:
            out["contexts"] = cmd.get("contexts")
            out["integration_types"] = cmd.get("integration_types") or [0]
        return out

    # -- interactions ---------------------------------------------------------------------

    def _interaction_for_callback(self, interaction_id: str, token: str) -> _Interaction:
        inter = self.interactions.get(token)
        if inter is None or inter.id != interaction_id:
            raise _error(404, ErrorCode.UNKNOWN_INTERACTION, "Unknown interaction")
        return inter

    async def _h_callback(self, request, params, body, rec):
        inter = self._interaction_for_callback(params["interaction_id"], params["token"])
        if inter.response_type is not None:
            raise _error(400, ErrorCode.INTERACTION_ALREADY_ACKNOWLEDGED, "Interaction has already been acknowledged.")
        started = inter.dispatched_at if inter.dispatched_at is not None else inter.created_at
        if self.interaction_ack_deadline is not None and time.monotonic() - started > self.interaction_ack_deadline:
            # Discord invalidates the token when the first response misses the 3 s deadline.
            raise _error(404, ErrorCode.UNKNOWN_INTERACTION, "Unknown interaction")
        if not isinstance(body, dict) or not isinstance(body.get("type"), int):
            raise _form_error(["type"], "BASE_TYPE_REQUIRED", "This field is required")
        rtype = body["type"]
        data = body.get("data") or {}
        valid = {2: {4, 5, 9, 12}, 3: {4, 5, 6, 7, 9, 12}, 4: {8}, 5: {4, 5, 6, 7}}.get(inter.type, set())
        if rtype not in valid:
            raise _form_error(["type"], "INTERACTION_RESPONSE_TYPE_INVALID",
                              f"Interaction response type {rtype} is not valid for interaction type {inter.type}")
        resource: Dict[str, Any] = {"type": rtype}
        callback: Dict[str, Any] = {"id": inter.id, "type": inter.type}
        message: Optional[dict] = None
        if rtype == 4:
            fields = self._validate_message(data, rec.files, inter.channel_id, interaction=True)
            message = self._interaction_message(inter, fields)
            inter.original_message_id = message["id"]
            inter.ephemeral = bool(fields["flags"] & MessageFlags.EPHEMERAL)
            resource["message"] = message
        elif rtype == 5:
            flags = (data.get("flags") or 0) if isinstance(data, dict) else 0
            if flags & ~MessageFlags.EPHEMERAL:
                raise _form_error(["data", "flags"], "INTERACTION_DEFERRED_FLAGS_INVALID",
                                  "Only the EPHEMERAL flag can be set on a deferred response")
            fields = {"content": "", "flags": MessageFlags.LOADING | flags}
            message = self._interaction_message(inter, fields)
            inter.original_message_id = message["id"]
            inter.deferred_pending = True
            inter.ephemeral = bool(flags & MessageFlags.EPHEMERAL)
        elif rtype in (6, 7):
            target = self.messages.get(str(inter.payload.get("message", {}).get("id")))
            if target is None:
                raise _error(404, ErrorCode.UNKNOWN_MESSAGE, "Unknown Message")
            inter.original_message_id = target["id"]
            if rtype == 7:
                self._apply_edit(target, data, rec.files, interaction=True)
                await self._echo("MESSAGE_UPDATE", target)
                resource["message"] = target
                message = target
        elif rtype == 8:
            choices = data.get("choices")
            if not isinstance(choices, list) or len(choices) > 25:
                raise _form_error(["data", "choices"], "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
        elif rtype == 9:
            self._validate_modal(data)
            inter.modal = json.loads(json.dumps(data))
        inter.response_type = rtype
        if inter.original_message_id and rtype in (4, 5):
            callback["response_message_id"] = inter.original_message_id
            callback["response_message_loading"] = rtype == 5
            callback["response_message_ephemeral"] = inter.ephemeral
        if message is not None and rtype in (4, 5):
            await self._echo("MESSAGE_CREATE", message)
        if request.query.get("with_response", "").lower() in ("1", "true"):
            return 200, {"interaction": callback, "resource": resource}
        return 204, None

    @staticmethod
    def _validate_modal(data: Any) -> None:
        """A MODAL response's data as Discord checks it
        (https://discord.com/developers/docs/interactions/receiving-and-responding#interaction-response-object-modal
        and .../components/reference#text-input): a custom_id and title, one to five top-level
        components, each an action row holding one text input (the older layout), a label
        holding one, or a text display; text inputs with their lengths and styles in range."""
        if not isinstance(data, dict):
            raise _form_error(["data"], "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
        for key in ("custom_id", "title", "components"):
            if not data.get(key):
                raise _form_error(["data", key], "BASE_TYPE_REQUIRED", "This field is required")
        if not isinstance(data["custom_id"], str) or len(data["custom_id"]) > 100:
            raise _form_error(["data", "custom_id"], "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")
        if not isinstance(data["title"], str) or len(data["title"]) > 45:
            raise _form_error(["data", "title"], "BASE_TYPE_MAX_LENGTH", "Must be 45 or fewer in length.")
        rows = data["components"]
        if not isinstance(rows, list) or not 1 <= len(rows) <= 5:
            raise _form_error(["data", "components"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length.")
        seen: set = set()
        for i, row in enumerate(rows):
            where: List[Union[str, int]] = ["data", "components", i]
            if not isinstance(row, dict):
                raise _form_error(where, "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
            if row.get("type") == 10:            # text display
                continue
            if row.get("type") == 1:
                inner = row.get("components")
                if not isinstance(inner, list) or len(inner) != 1:
                    raise _form_error(where + ["components"], "BASE_TYPE_BAD_LENGTH",
                                      "Must be between 1 and 1 in length.")
                text_input, labelled = inner[0], False
                where = where + ["components", 0]
            elif row.get("type") == 18:
                label = row.get("label")
                if not isinstance(label, str) or not 1 <= len(label) <= 45:
                    raise _form_error(where + ["label"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 45 in length.")
                text_input, labelled = row.get("component"), True
                where = where + ["component"]
            else:
                raise _form_error(where + ["type"], "UNION_TYPE_CHOICES",
                                  "Value of field \"type\" must be one of (1, 10, 18).")
            if not isinstance(text_input, dict) or text_input.get("type") != 4:
                if labelled and isinstance(text_input, dict) and text_input.get("type") in (3, 5, 6, 7, 8):
                    continue                     # a select menu in a label
                raise _form_error(where + ["type"], "UNION_TYPE_CHOICES", "Value of field \"type\" must be 4.")
            cid = text_input.get("custom_id")
            if not isinstance(cid, str) or not 1 <= len(cid) <= 100:
                raise _form_error(where + ["custom_id"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
            if cid in seen:
                raise _form_error(where + ["custom_id"], "COMPONENT_CUSTOM_ID_DUPLICATED",
                                  "Component custom id cannot be duplicated")
            seen.add(cid)
            if text_input.get("style") not in (1, 2):
                raise _form_error(where + ["style"], "BASE_TYPE_CHOICES", "Value must be one of (1, 2).")
            if not labelled:
                label = text_input.get("label")
                if not isinstance(label, str) or not 1 <= len(label) <= 45:
                    raise _form_error(where + ["label"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 45 in length.")
            low, high = text_input.get("min_length"), text_input.get("max_length")
            if low is not None and (not isinstance(low, int) or not 0 <= low <= 4000):
                raise _form_error(where + ["min_length"], "NUMBER_TYPE_MAX", "int value should be between 0 and 4000.")
            if high is not None and (not isinstance(high, int) or not 1 <= high <= 4000):
                raise _form_error(where + ["max_length"], "NUMBER_TYPE_MAX", "int value should be between 1 and 4000.")
            if low is not None and high is not None and low > high:
                raise _form_error(where + ["min_length"], "BASE_TYPE_BAD_LENGTH", "min_length must not exceed max_length.")
            value = text_input.get("value")
            if value is not None and (not isinstance(value, str) or len(value) > (high or 4000)):
                raise _form_error(where + ["value"], "BASE_TYPE_MAX_LENGTH", f"Must be {high or 4000} or fewer in length.")
            placeholder = text_input.get("placeholder")
            if placeholder is not None and (not isinstance(placeholder, str) or len(placeholder) > 100):
                raise _form_error(where + ["placeholder"], "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")

    def _interaction_message(self, inter: _Interaction, fields: Dict[str, Any]) -> dict:
        msg = self._make_message(
            inter.channel_id, self.bot_user, fields.get("content", ""),
            attachments=fields.get("attachments"), embeds=fields.get("embeds"),
            components=fields.get("components"), flags=fields.get("flags", 0), webhook_id=self.application_id,
            interaction=inter, tts=fields.get("tts", False), poll=fields.get("poll"),
            allowed_mentions=fields.get("allowed_mentions"))
        inter.message_ids.append(msg["id"])
        return msg

    def _interaction_for_webhook(self, params: dict) -> _Interaction:
        inter = self.interactions.get(params["token"])
        if params["webhook_id"] != self.application_id or inter is None or inter.response_type is None:
            # An interaction's webhook only exists once the interaction is acknowledged.
            raise _error(404, ErrorCode.UNKNOWN_WEBHOOK, "Unknown Webhook")
        if time.monotonic() - inter.created_at > 15 * 60:
            raise _error(401, 50027, "Invalid Webhook Token")
        return inter

    async def _h_followup(self, request, params, body, rec):
        inter = self._interaction_for_webhook(params)
        body = body or {}
        for key in ("username", "avatar_url", "thread_name"):
            if body.get(key):
                raise _form_error([key], "INTERACTION_FOLLOWUP_FIELD_UNSUPPORTED",
                                  f"{key} is not supported for interaction follow-ups")
        if inter.deferred_pending and inter.original_message_id in self.messages:
            # Documented: the first follow-up after DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE edits
            # the loading message instead of creating one; its ephemeral state is kept.
            msg = self.messages[inter.original_message_id]
            self._apply_edit(msg, dict(body, flags=0), rec.files, interaction=True)
            inter.deferred_pending = False
            await self._echo("MESSAGE_UPDATE", msg)
            return 200, msg
        fields = self._validate_message(body, rec.files, inter.channel_id, interaction=True)
        msg = self._interaction_message(inter, fields)
        await self._echo("MESSAGE_CREATE", msg)
        return 200, msg  # "wait is always true" for interaction follow-ups

    async def _h_modify_webhook(self, request, params, body, rec):
        raise _error(404, ErrorCode.UNKNOWN_WEBHOOK, "Unknown Webhook")

    async def _h_webhook_message(self, request, params, body, rec):
        inter = self._interaction_for_webhook(params)
        mid = inter.original_message_id if params["message_id"] == "@original" else params["message_id"]
        allowed = set(inter.message_ids)
        if inter.original_message_id:
            allowed.add(inter.original_message_id)
        msg = self.messages.get(str(mid)) if mid in allowed else None
        if msg is None:
            raise _error(404, ErrorCode.UNKNOWN_MESSAGE, "Unknown Message")
        if request.method == "GET":
            return 200, msg
        if request.method == "DELETE":
            await self._delete_message(msg)
            return 204, None
        self._apply_edit(msg, body or {}, rec.files, interaction=True)
        if msg["id"] == inter.original_message_id:
            inter.deferred_pending = False
        await self._echo("MESSAGE_UPDATE", msg)
        return 200, msg


def _walk_components(components: Any) -> Iterator[dict]:
    for comp in components or []:
        if isinstance(comp, dict):
            yield comp
            yield from _walk_components(comp.get("components"))
            if isinstance(comp.get("accessory"), dict):
                yield comp["accessory"]


def shape_of(value: Any) -> Any:
    """Public alias of the key-structure helper used to compare payloads with fixtures."""
    return _shape(value)
