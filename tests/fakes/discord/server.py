"""The Discord fake's server: the aiohttp app on 127.0.0.1 (port 0) with its routes (REST, gateway,
CDN, uploads), the state every surface shares, ids, and the bounded wait on what it records."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from aiohttp import WSCloseCode

from tests.fakes.discord.commands import Commands
from tests.fakes.discord.files import Files, _StoredAttachment, _Upload
from tests.fakes.discord.gateway import Gateway, _GatewayConn, _Session
from tests.fakes.discord.interactions import Interactions, _Interaction
from tests.fakes.discord.messages import Messages
from tests.fakes.discord.protocol import (
    API_VERSION,
    DEFAULT_UPLOAD_LIMIT,
    DISCORD_EPOCH_MS,
    DiscordFakeTimeout,
    Intents,
    RecordedRequest,
)
from tests.fakes.discord.rest import DEFAULT_BUCKETS, Rest, _Bucket, _Rule
from tests.fakes.discord.world import World
from tests.fakes.shared import Changes, Holds, LoopbackServer, Url


class DiscordFake(World, Messages, Files, Interactions, Commands, Gateway, Rest, LoopbackServer):
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
        self._session: Optional[_Session] = None
        self._sessions: Dict[str, _Session] = {}
        self._consumed: set = set()
        self._changes = Changes()
        self._rate_rules: List[_Rule] = []
        self._faults: List[_Rule] = []
        self._holds = Holds()  # (METHOD, path prefix) of requests held unanswered
        self.held: List[str] = []     # "METHOD path" of each request that arrived while held
        self._buckets: Dict[str, _Bucket] = {}
        self._conn_counter = 0

    base_url = Url("http", "")
    api_base = Url("http", f"/api/v{API_VERSION}")
    gateway_url = Url("ws", "/gw")
    resume_gateway_url = Url("ws", "/gw-resume")

    async def start(self) -> "DiscordFake":
        self.port = await self._serve(client_max_size=self.upload_limit + 8 * 1024 * 1024)
        return self

    async def stop(self) -> None:
        self.release_all()
        for conn in list(self.gateway_connections):
            if conn.open:
                await conn.close(WSCloseCode.GOING_AWAY, "fake stopping")
        await self._unserve()

    def _snowflake(self, ms: Optional[int] = None) -> str:
        ms = int(time.time() * 1000) if ms is None else ms
        value = ((ms - DISCORD_EPOCH_MS) << 22) | (1 << 17)
        value = max(value, self._sf_last + 1)
        self._sf_last = value
        return str(value)

    def _touch(self) -> None:
        self._changes.notify()

    async def _wait_until(self, check: Callable[[], Any], timeout: float, what: str) -> Any:
        assert self.port is not None, "fake not started"
        try:
            return await self._changes.until(check, timeout)
        except asyncio.TimeoutError:
            recent = ", ".join(repr(r) for r in self.requests[-8:])
            raise DiscordFakeTimeout(f"timed out after {timeout}s waiting for {what}; "
                                     f"identifies={self.identify_count} resumes={self.resume_count} "
                                     f"recent requests: [{recent}]") from None
