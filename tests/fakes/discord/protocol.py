"""What every surface of the Discord fake shares: the numbers Discord documents (intents, message
flags, JSON error codes, permission bits), its error answers, the record of a request, and ids
and times as Discord writes them."""

from __future__ import annotations

import dataclasses
import datetime
import json
import time
from typing import Any, Dict, Iterator, List, Optional, Union

from aiohttp import web

DISCORD_EPOCH_MS = 1420070400000
API_VERSION = 10
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


def _shape(value: Any) -> Any:
    """The key structure of a JSON value (used to compare builders with fixtures)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items() if k not in ("_source", "_note")}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return type(value).__name__ if value is not None else None


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
