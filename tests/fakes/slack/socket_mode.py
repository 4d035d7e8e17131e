"""Socket Mode of the Slack fake: apps.connections.open hands out a loopback `ws://` URL; the
connection gets `hello`, envelopes (events_api, slash_commands, interactive) and `disconnect`;
acknowledgements are checked (known envelope, once, in time, a payload only where Slack reads
one) and an events_api envelope not acknowledged in time is redelivered, as Slack does."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional

import aiohttp
from aiohttp import web

from tests.fakes.slack.protocol import SlackApiFailure, load_fixture

ACK_DEADLINE_S = 3.0


@dataclass
class _Conn:
    ws: web.WebSocketResponse
    number: int
    opened: float
    ticket: str
    closed: bool = False
    received: list = field(default_factory=list)


class SocketMode:
    """The Socket Mode side of SlackFake."""

    _PATHS = [("GET", "/link/", "_handle_ws"), ("GET", "/link", "_handle_ws")]

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

    def _api_apps_connections_open(self, params: dict, request: web.Request) -> dict:
        if request.method != "POST":
            raise SlackApiFailure("insecure_request")
        self.connections_open_requests += 1
        ticket = str(uuid.uuid4())
        self._tickets[ticket] = time.time()
        app_hash = hashlib.sha1(ticket.encode()).hexdigest()[:20]
        return {"url": f"ws://127.0.0.1:{self.port}/link/?ticket={ticket}&app_id={app_hash}"}
