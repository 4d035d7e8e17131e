"""The Discord fake's gateway: HELLO, IDENTIFY and READY, heartbeats, RESUME with replay of what
was buffered, op 7 / op 9 / dropped connections on demand, zlib-stream and zstd-stream, intents
(an event the client did not ask for is not sent), and dispatch of events."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
import uuid
import zlib
from typing import Any, Callable, List, Optional

from aiohttp import WSMsgType, web

from tests.fakes.discord.protocol import API_VERSION, Intents

MAX_GATEWAY_PAYLOAD = 4096

# Gateway opcodes (https://discord.com/developers/docs/topics/opcodes-and-status-codes#gateway)
OP_DISPATCH, OP_HEARTBEAT, OP_IDENTIFY, OP_PRESENCE = 0, 1, 2, 3
OP_VOICE_STATE, OP_RESUME, OP_RECONNECT, OP_REQUEST_MEMBERS = 4, 6, 7, 8
OP_INVALID_SESSION, OP_HELLO, OP_HEARTBEAT_ACK, OP_REQUEST_SOUNDBOARD = 9, 10, 11, 31

# Gateway close codes.
CLOSE_UNKNOWN_ERROR, CLOSE_UNKNOWN_OPCODE, CLOSE_DECODE_ERROR = 4000, 4001, 4002
CLOSE_NOT_AUTHENTICATED, CLOSE_AUTHENTICATION_FAILED, CLOSE_ALREADY_AUTHENTICATED = 4003, 4004, 4005
CLOSE_INVALID_SEQ, CLOSE_INVALID_API_VERSION = 4007, 4012
CLOSE_INVALID_INTENTS, CLOSE_DISALLOWED_INTENTS = 4013, 4014


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


class Gateway:
    """The gateway side of DiscordFake."""

    _PATHS = [("GET", "/gw", "_gateway_entry"), ("GET", "/gw-resume", "_gateway_entry")]

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

    async def _authenticated(self, conn: _GatewayConn, d: Any, *, identify: bool) -> bool:
        """The checks IDENTIFY and RESUME share (a fresh connection, a payload, the bot's token);
        False once the connection is closed for failing one."""
        if conn.session is not None:
            await conn.close(CLOSE_ALREADY_AUTHENTICATED, "Already authenticated.")
            return False
        if not isinstance(d, dict) or (identify and not isinstance(d.get("properties"), dict)):
            await conn.close(CLOSE_DECODE_ERROR, "Error while decoding payload.")
            return False
        token = d.get("token")
        if isinstance(token, str) and token.startswith("Bot "):
            token = token[4:]
        if token != self.token:
            await conn.close(CLOSE_AUTHENTICATION_FAILED, "Authentication failed.")
            return False
        return True

    async def _on_identify(self, conn: _GatewayConn, d: Any) -> None:
        if not await self._authenticated(conn, d, identify=True):
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
        if not await self._authenticated(conn, d, identify=False):
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
