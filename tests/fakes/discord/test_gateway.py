"""The Discord fake's gateway: the protocol with a plain websocket, and the real discord.py
client through op 7, op 9 and dropped connections."""

from __future__ import annotations

import json
import zlib

import aiohttp
import pytest

from tests.fakes.discord import DiscordFake
from tests.fakes.discord.conftest import T, from_user, next_item, running
from tests.fakes.discord.protocol import Intents

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(25)]


async def test_gateway_protocol(fake):
    async with aiohttp.ClientSession() as http:
        # zlib-stream transport compression, as discord.py 2.7 asks for it.
        async with http.ws_connect(fake.gateway_url + "?v=10&encoding=json&compress=zlib-stream") as ws:
            z = zlib.decompressobj()

            async def recv():
                msg = await ws.receive(timeout=T)
                assert msg.type == aiohttp.WSMsgType.BINARY, msg
                return json.loads(z.decompress(msg.data))

            hello = await recv()
            assert hello["op"] == 10 and hello["d"]["heartbeat_interval"] > 0
            await ws.send_json({"op": 1, "d": None})
            assert (await recv())["op"] == 11
            await ws.send_json({"op": 2, "d": {"token": "fake-bot-token", "intents": Intents.GUILDS |
                                               Intents.GUILD_MESSAGES, "properties": {"os": "linux"}}})
            ready = await recv()
            assert ready["t"] == "READY" and ready["s"] == 1
            assert ready["d"]["resume_gateway_url"].startswith("ws://127.0.0.1:")
            assert ready["d"]["application"]["id"] == fake.application_id
            assert ready["d"]["guilds"] == [{"id": fake.guild_id, "unavailable": True}]
            guild = await recv()
            assert guild["t"] == "GUILD_CREATE" and guild["s"] == 2
            assert {c["id"] for c in guild["d"]["channels"]} >= {fake.channel_id, fake.support_channel_id}
            # Without MESSAGE_CONTENT, content is blanked unless the bot is mentioned.
            assert await fake.dispatch("MESSAGE_CREATE", fake.message_create_guild("secret")) == 3
            event = await recv()
            assert event["s"] == 3 and event["d"]["content"] == ""
            await fake.dispatch("MESSAGE_CREATE", fake.message_create_mention("visible"))
            assert (await recv())["d"]["content"].endswith("visible")
            # DIRECT_MESSAGES not requested: a DM is not sent at all.
            assert await fake.dispatch("MESSAGE_CREATE", fake.message_create_dm("hi")) is None
            assert fake.dropped_events
            await ws.send_json({"op": 2, "d": {"token": "fake-bot-token", "intents": 1, "properties": {}}})
            msg = await ws.receive(timeout=T)
            assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4005
        session_id = fake._session.id

        async def closes_with(url, payload, code):
            async with http.ws_connect(url) as ws:
                assert json.loads((await ws.receive(timeout=T)).data)["op"] == 10
                await ws.send_json(payload)
                msg = await ws.receive(timeout=T)
                assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == code, msg

        plain = fake.gateway_url + "?v=10&encoding=json"
        await closes_with(plain, {"op": 2, "d": {"token": "bad", "intents": 1, "properties": {}}}, 4004)
        await closes_with(plain, {"op": 2, "d": {"token": "fake-bot-token", "properties": {}}}, 4013)
        await closes_with(plain, {"op": 3, "d": {}}, 4003)
        await closes_with(plain, {"op": 99, "d": None}, 4003)
        strict = DiscordFake(allowed_privileged_intents=0)
        await strict.start()
        try:
            await closes_with(strict.gateway_url + "?v=10&encoding=json",
                              {"op": 2, "d": {"token": "fake-bot-token", "intents": Intents.MESSAGE_CONTENT,
                                              "properties": {}}}, 4014)
        finally:
            await strict.stop()
        # RESUME of the session above (the server closed it with 4005: still resumable):
        # the events after the client's seq are replayed, then RESUMED.
        resume_url = fake.resume_gateway_url + "?v=10&encoding=json"
        async with http.ws_connect(resume_url) as ws:
            await ws.receive(timeout=T)
            await ws.send_json({"op": 6, "d": {"token": "fake-bot-token", "session_id": session_id, "seq": 3}})
            replayed = json.loads((await ws.receive(timeout=T)).data)
            assert replayed["s"] == 4 and replayed["d"]["content"].endswith("visible")
            resumed = json.loads((await ws.receive(timeout=T)).data)
            assert resumed["t"] == "RESUMED" and resumed["s"] == 5
            await ws.close(code=1000)  # a client closing with 1000 ends its session
        async with http.ws_connect(resume_url) as ws:
            await ws.receive(timeout=T)
            await ws.send_json({"op": 6, "d": {"token": "fake-bot-token", "session_id": session_id, "seq": 5}})
            assert json.loads((await ws.receive(timeout=T)).data) == {"op": 9, "d": False, "s": None, "t": None}
        assert fake.resume_count == 1


async def test_client_survives_reconnect_and_invalid_session(fake):
    async with running(fake) as bot:
        # op 7 RECONNECT -> the client RESUMEs; an event sent meanwhile is replayed.
        await fake.send_reconnect()
        await fake.dispatch("MESSAGE_CREATE", fake.message_create_mention("sent while away"))
        await fake.wait_for_resume(1, timeout=T)
        await next_item(bot.resumes, "on_resumed")
        missed = await next_item(bot.inbox, "replayed message", from_user)
        assert missed.content.endswith("sent while away")
        resume = await fake.wait_for_gateway(6, timeout=T)
        first_ready = next(p for p in fake.gateway_sent if p.get("t") == "READY")
        assert resume["d"]["session_id"] == first_ready["d"]["session_id"]
        assert fake.gateway_connections[-1].path == "/gw-resume"  # resume_gateway_url from READY
        assert fake.identify_count == 1 and fake.resume_count == 1

        # op 9 INVALID_SESSION (not resumable) -> a fresh IDENTIFY and a new READY.
        await fake.send_invalid_session(resumable=False)
        await fake.wait_for_identify(2, timeout=T)
        await next_item(bot.readies, "second on_ready")
        assert fake.gateway_connections[-1].session is not None  # identified on a fresh connection
        await fake.dispatch("MESSAGE_CREATE", fake.message_create_mention("after re-identify"))
        again = await next_item(bot.inbox, "message after re-identify", from_user)
        assert again.content.endswith("after re-identify")

        # op 9 resumable -> RESUME.
        await fake.send_invalid_session(resumable=True)
        await fake.wait_for_resume(2, timeout=T)
        assert fake.identify_count == 2
        assert fake.heartbeat_count >= 3  # discord.py heartbeats on every HELLO
