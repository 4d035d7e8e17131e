"""Self-test of the Discord loopback fake, driving the real discord.py client against it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import pathlib
import struct
import time
import zlib

import aiohttp
import discord
import discord.gateway
import discord.http
import pytest
import pytest_asyncio
from discord import app_commands

from tests.fakes.discord import DiscordFake
from tests.fakes.discord.pointing import check_discord_py_internals, point_discord_py_at
from tests.fakes.discord.protocol import ErrorCode, Intents, MessageFlags, shape_of

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(25)]

FIXTURES = pathlib.Path(__file__).resolve().parents[2] / "fixtures" / "discord"
T = 10  # seconds: the bound of every wait


def png(width: int = 3, height: int = 2) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


OGG = b"OggS\x00\x02" + bytes(range(64)) * 4  # opaque audio bytes; the fake does not decode them


# ---------------------------------------------------------------------------------------
# A real discord.py client wired to the fake
# ---------------------------------------------------------------------------------------


class Bot(discord.Client):
    def __init__(self, *, message_content: bool = True) -> None:
        intents = discord.Intents.default()
        intents.message_content = message_content
        # guild_ready_timeout: discord.py waits this long after the last GUILD_CREATE.
        super().__init__(intents=intents, guild_ready_timeout=0.1)
        self.tree = app_commands.CommandTree(self)
        self.readies: asyncio.Queue = asyncio.Queue()
        self.resumes: asyncio.Queue = asyncio.Queue()
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.answered: asyncio.Queue = asyncio.Queue()

        @self.tree.command(name="ask", description="Ask Confab a question")
        @app_commands.describe(question="What to ask")
        async def ask(interaction: discord.Interaction, question: str) -> None:
            await interaction.response.defer(thinking=True)
            msg = await interaction.followup.send(f"answer to: {question}", wait=True)
            await self.answered.put((interaction, msg))

    async def on_ready(self) -> None:
        await self.readies.put(self.user)

    async def on_resumed(self) -> None:
        await self.resumes.put(True)

    async def on_message(self, message: discord.Message) -> None:
        await self.inbox.put(message)


async def next_item(queue: asyncio.Queue, what: str, predicate=None):
    async def get():
        while True:
            item = await queue.get()
            if predicate is None or predicate(item):
                return item
    try:
        return await asyncio.wait_for(get(), T)
    except asyncio.TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def from_user(message: discord.Message) -> bool:
    return not message.author.bot


@pytest_asyncio.fixture
async def fake():
    async with DiscordFake() as f:
        yield f


@contextlib.asynccontextmanager
async def running(fake: DiscordFake, **kw):
    with point_discord_py_at(fake):
        bot = Bot(**kw)
        task = asyncio.create_task(bot.start(fake.token))
        try:
            await next_item(bot.readies, "on_ready")
            yield bot
        finally:
            await bot.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 5)


# ---------------------------------------------------------------------------------------
# discord.py internals
# ---------------------------------------------------------------------------------------


async def test_discord_py_internals_have_not_moved(fake):
    """If this fails after a discord.py upgrade, update point_discord_py_at()."""
    check_discord_py_internals()
    assert isinstance(discord.http.Route.BASE, str)
    base, gateway = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    assert base.startswith("https://discord.com/api/v")
    assert str(gateway).startswith("wss://gateway.discord.gg")
    with point_discord_py_at(fake):
        assert discord.http.Route("GET", "/users/@me").url == fake.api_base + "/users/@me"
        assert str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == fake.gateway_url
    assert discord.http.Route.BASE == base
    assert discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY == gateway


# ---------------------------------------------------------------------------------------
# Fixtures and builders
# ---------------------------------------------------------------------------------------


def builder_payloads(fake: DiscordFake) -> dict:
    fake.global_commands = [fake._command_object(
        {"name": "ask", "description": "Ask", "type": 1,
         "options": [{"type": 3, "name": "question", "description": "q", "required": True}]}, None, None)]
    mention = fake.message_create_mention("what is confab?")
    bot_msg = fake._make_message(fake.channel_id, fake.bot_user, "Pick one",
                                 components=[{"type": 1, "components": [
                                     {"type": 2, "style": 1, "label": "Yes", "custom_id": "yes"}]}])
    question = fake.message_create_guild("how do I reset my password?", channel_id=fake.support_channel_id)
    thread = fake._new_thread(fake.channels[fake.support_channel_id], fake.messages[question["id"]], fake.user,
                              {"name": "reset"})
    in_thread = fake.message_create_guild("thanks, that worked", channel_id=thread["id"])
    modal_for = fake.interaction_command("ask", {"question": "hi"})
    fake.interaction_state(modal_for).modal = {"custom_id": "form", "title": "A form", "components": [
        {"type": 1, "components": [{"type": 4, "custom_id": "name", "label": "Name", "style": 1}]}]}
    return {
        "gateway_thread_create.json": dict(thread, newly_created=True),
        "message_create_in_thread.json": in_thread,
        "interaction_create_modal_submit.json": fake.interaction_modal_submit(modal_for, {"name": "Ada"}),
        "message_create_guild_mention.json": mention,
        "message_create_dm.json": fake.message_create_dm("hi"),
        "message_create_reply.json": fake.message_create_reply("and then?", mention),
        "message_create_voice.json": fake.message_create_voice(OGG, duration_secs=3.2),
        "message_create_image.json": fake.message_create_image(png(), content="what is this?"),
        "interaction_create_command.json": fake.interaction_command("ask", {"question": "hi"}),
        "interaction_create_button.json": fake.interaction_button("yes", bot_msg),
    }


async def test_fixtures_name_their_source_and_match_the_builders(fake):
    files = sorted(FIXTURES.glob("*.json"))
    assert len(files) >= 10, files
    for path in files:
        data = json.loads(path.read_text())
        assert data.get("_source", "").startswith("https://discord.com/developers/docs/"), path.name
    for name, payload in builder_payloads(fake).items():
        fixture = json.loads((FIXTURES / name).read_text())
        assert shape_of(payload) == shape_of(fixture), name


async def test_builder_shapes(fake):
    p = builder_payloads(fake)
    mention = p["message_create_guild_mention.json"]
    assert mention["content"] == f"<@{fake.bot_user_id}> what is confab?"
    assert mention["mentions"][0]["id"] == fake.bot_user_id and mention["guild_id"] == fake.guild_id
    dm = p["message_create_dm.json"]
    assert "guild_id" not in dm and "member" not in dm and dm["channel_type"] == 1
    reply = p["message_create_reply.json"]
    assert reply["type"] == 19 and reply["referenced_message"]["id"] == mention["id"]
    voice = p["message_create_voice.json"]
    (att,) = voice["attachments"]
    assert voice["flags"] == MessageFlags.IS_VOICE_MESSAGE and voice["content"] == ""
    assert att["content_type"] == "audio/ogg" and att["duration_secs"] == 3.2
    assert 0 < len(base64.b64decode(att["waveform"])) <= 256
    image = p["message_create_image.json"]["attachments"][0]
    assert (image["width"], image["height"]) == (3, 2) and image["content_type"] == "image/png"
    cmd = p["interaction_create_command.json"]
    for key in ("id", "type", "token", "version", "application_id", "attachment_size_limit", "data",
                "guild_id", "channel_id", "channel", "member", "app_permissions", "locale", "entitlements",
                "authorizing_integration_owners", "context"):
        assert key in cmd, key
    assert cmd["data"]["options"] == [{"name": "question", "type": 3, "value": "hi"}]
    assert cmd["data"]["id"] == fake.global_commands[0]["id"]
    button = p["interaction_create_button.json"]
    assert button["type"] == 3 and button["data"]["custom_id"] == "yes" and button["message"]["id"]
    with pytest.raises(ValueError):
        fake.interaction_command("nope")
    with pytest.raises(ValueError):
        fake.interaction_command("ask", {})  # required option missing


# ---------------------------------------------------------------------------------------
# REST strictness, with plain aiohttp
# ---------------------------------------------------------------------------------------


AUTH = {"Authorization": "Bot fake-bot-token", "User-Agent": "DiscordBot (https://example.invalid, 1)"}


async def test_rest_is_as_strict_as_discord(fake):
    api = fake.api_base
    cid = fake.channel_id
    # Refused requests count against a bucket too; loosen it for the validation checks.
    fake.bucket_config["POST /channels/{channel_id}/messages"] = (100, 5.0)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{api}/users/@me", headers={**AUTH, "Authorization": "Bot wrong"}) as r:
            assert r.status == 401 and await r.json() == {"message": "401: Unauthorized", "code": 0}
        async with http.get(f"{api}/users/@me", headers=AUTH) as r:
            assert r.status == 200 and r.headers["Content-Type"] == "application/json"
            assert (await r.json())["id"] == fake.bot_user_id
            assert r.headers["X-RateLimit-Limit"] and r.headers["X-RateLimit-Bucket"]
        async with http.get(f"{api}/nope", headers=AUTH) as r:
            assert r.status == 404
        async with http.put(f"{api}/users/@me", headers=AUTH) as r:
            assert r.status == 405

        async def post(path, body=None, data=None, status=200, code=None):
            async with http.post(f"{api}{path}", json=body, data=data, headers=AUTH) as r:
                got = await r.json() if r.content_length != 0 and r.status != 204 else None
                assert r.status == status, (path, r.status, got)
                if code is not None:
                    assert got["code"] == code, got
                return got

        err = await post(f"/channels/{cid}/messages", {"content": "x" * 2001}, status=400,
                         code=ErrorCode.INVALID_FORM_BODY)
        assert err["errors"]["content"]["_errors"][0]["code"] == "BASE_TYPE_MAX_LENGTH"
        await post(f"/channels/{cid}/messages", {"content": "  "}, status=400, code=ErrorCode.EMPTY_MESSAGE)
        await post("/channels/1/messages", {"content": "hi"}, status=404, code=ErrorCode.UNKNOWN_CHANNEL)
        await post(f"/channels/{cid}/messages", {"content": "hi", "message_reference": {"message_id": "1"}},
                   status=400, code=ErrorCode.INVALID_FORM_BODY)
        sent = await post(f"/channels/{cid}/messages", {"content": "x" * 2000})
        assert sent["author"]["id"] == fake.bot_user_id

        # Voice messages: no content, one audio attachment with duration_secs + waveform.
        wave = base64.b64encode(bytes(range(50))).decode()

        def voice_form(payload, files=(("voice-message.ogg", OGG),)):
            form = aiohttp.FormData(quote_fields=False)
            form.add_field("payload_json", json.dumps(payload))
            for i, (name, blob) in enumerate(files):
                form.add_field(f"files[{i}]", blob, filename=name, content_type="application/octet-stream")
            return form

        voice_att = {"id": 0, "filename": "voice-message.ogg", "duration_secs": 1.5, "waveform": wave}
        vpath = f"/channels/{cid}/messages"
        await post(vpath, data=voice_form({"flags": 8192, "content": "hi", "attachments": [voice_att]}),
                   status=400, code=ErrorCode.VOICE_MESSAGE_ADDITIONAL_CONTENT)
        await post(vpath, data=voice_form({"flags": 8192, "attachments": [
            {"id": 0, "filename": "x.png", "duration_secs": 1.5, "waveform": wave}]}, files=[("x.png", png())]),
            status=400, code=ErrorCode.VOICE_MESSAGE_SINGLE_AUDIO_ATTACHMENT)
        await post(vpath, data=voice_form({"flags": 8192, "attachments": [{"id": 0, "filename": "voice-message.ogg"}]}),
                   status=400, code=ErrorCode.VOICE_MESSAGE_METADATA)
        big_wave = base64.b64encode(bytes(300)).decode()
        await post(vpath, data=voice_form({"flags": 8192, "attachments": [dict(voice_att, waveform=big_wave)]}),
                   status=400, code=ErrorCode.INVALID_FORM_BODY)
        voice = await post(vpath, data=voice_form({"flags": 8192, "attachments": [voice_att]}))
        assert voice["flags"] == 8192 and voice["attachments"][0]["content_type"] == "audio/ogg"
        assert fake.find("POST", vpath, status=200)[-1].files[0].data == OGG
        async with http.patch(f"{api}/channels/{cid}/messages/{voice['id']}", json={"content": "x"},
                              headers=AUTH) as r:
            assert r.status == 400 and (await r.json())["code"] == ErrorCode.VOICE_MESSAGE_CANNOT_BE_EDITED
        async with http.patch(f"{api}/channels/{cid}/messages/1", json={"content": "x"}, headers=AUTH) as r:
            assert r.status == 404 and (await r.json())["code"] == ErrorCode.UNKNOWN_MESSAGE
        user_msg = fake.message_create_guild("mine")
        async with http.patch(f"{api}/channels/{cid}/messages/{user_msg['id']}", json={"content": "x"},
                              headers=AUTH) as r:
            assert r.status == 403 and (await r.json())["code"] == ErrorCode.CANNOT_EDIT_OTHERS_MESSAGE

        # Attachment URLs are signed like Discord's CDN.
        url = voice["attachments"][0]["url"]
        async with http.get(url) as r:
            assert r.status == 200 and await r.read() == OGG and r.headers["Content-Type"] == "audio/ogg"
        async with http.get(url.split("?")[0]) as r:
            assert r.status == 404

        # 429 with everything discord.py looks at.
        fake.rate_limit(f"/channels/{cid}/typing", retry_after=0.25)
        async with http.post(f"{api}/channels/{cid}/typing", headers=AUTH) as r:
            assert r.status == 429 and r.headers["Content-Type"] == "application/json"
            assert await r.json() == {"message": "You are being rate limited.", "retry_after": 0.25, "global": False}
            assert r.headers["Via"] and r.headers["Retry-After"] == "1"
            assert r.headers["X-RateLimit-Remaining"] == "0" and r.headers["X-RateLimit-Scope"] == "user"
        async with http.post(f"{api}/channels/{cid}/typing", headers=AUTH) as r:
            assert r.status == 204

        # A client that ignores the rate-limit headers gets a real 429 (5 per 5 s per channel).
        fake.bucket_config["POST /channels/{channel_id}/messages"] = (5, 5.0)
        other = fake.add_text_channel("flood")["id"]
        statuses = []
        for i in range(6):
            async with http.post(f"{api}/channels/{other}/messages", json={"content": str(i)}, headers=AUTH) as r:
                statuses.append(r.status)
                if r.status == 200:
                    remaining = r.headers["X-RateLimit-Remaining"]
        assert statuses == [200] * 5 + [429] and remaining == "0"

        # Interactions: one response only, within the deadline; follow-ups need it acknowledged.
        fake.global_commands = [fake._command_object({"name": "ask", "description": "Ask"}, None, None)]
        inter = fake.interaction_command("ask")
        cb = f"{api}/interactions/{inter['id']}/{inter['token']}/callback"
        hook = f"{api}/webhooks/{fake.application_id}/{inter['token']}"
        async with http.post(hook, json={"content": "early"}) as r:
            assert r.status == 404 and (await r.json())["code"] == ErrorCode.UNKNOWN_WEBHOOK
        async with http.post(cb + "?with_response=1", json={"type": 4, "data": {"content": "hello"}}) as r:
            body = await r.json()
            assert r.status == 200 and body["interaction"]["id"] == inter["id"]
            assert body["resource"]["type"] == 4 and body["resource"]["message"]["content"] == "hello"
        async with http.post(cb, json={"type": 4, "data": {"content": "again"}}) as r:
            assert r.status == 400 and (await r.json()) == {
                "message": "Interaction has already been acknowledged.", "code": 40060}
        async with http.patch(hook + "/messages/@original", json={"content": "edited"}) as r:
            assert r.status == 200 and (await r.json())["content"] == "edited"
        async with http.post(hook, json={"content": "more"}) as r:
            assert r.status == 200 and (await r.json())["content"] == "more"
        late = fake.interaction_command("ask")
        fake.interactions[late["token"]].created_at -= 4
        async with http.post(f"{api}/interactions/{late['id']}/{late['token']}/callback", json={"type": 5}) as r:
            assert r.status == 404 and (await r.json())["code"] == ErrorCode.UNKNOWN_INTERACTION


async def test_command_sync_validation(fake):
    api = f"{fake.api_base}/applications/{fake.application_id}/commands"
    async with aiohttp.ClientSession() as http:
        async with http.put(api, json=[{"name": "Ask", "description": "x"}], headers=AUTH) as r:
            assert r.status == 400 and (await r.json())["code"] == ErrorCode.INVALID_FORM_BODY
        async with http.put(api, json=[{"name": "ask", "description": ""}], headers=AUTH) as r:
            assert r.status == 400
        async with http.put(api, json=[{"name": "ask", "description": "d", "options": [
                {"type": 3, "name": "a", "description": "a"},
                {"type": 3, "name": "b", "description": "b", "required": True}]}], headers=AUTH) as r:
            assert r.status == 400
        async with http.put(f"{fake.api_base}/applications/1/commands", json=[], headers=AUTH) as r:
            assert r.status == 403


# ---------------------------------------------------------------------------------------
# Gateway strictness, with a plain websocket
# ---------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------
# The real discord.py client
# ---------------------------------------------------------------------------------------


async def test_client_messages_attachments_edits_and_rate_limits(fake):
    async with running(fake) as bot:
        ident = fake.identify_payloads[0]
        assert fake.identify_count == 1 and ident["intents"] & Intents.MESSAGE_CONTENT
        assert fake.gateway_connections[0].compress == "zlib-stream"
        assert bot.user.id == int(fake.bot_user_id) and bot.application_id == int(fake.application_id)
        assert bot.get_channel(int(fake.channel_id)) is not None

        # A mention in a guild channel; the bot replies.
        await fake.dispatch("MESSAGE_CREATE", fake.message_create_mention("question"))
        msg = await next_item(bot.inbox, "on_message (mention)", from_user)
        assert msg.content == f"<@{fake.bot_user_id}> question" and bot.user in msg.mentions
        assert isinstance(msg.channel, discord.TextChannel) and msg.guild.id == int(fake.guild_id)
        reply = await msg.reply("pong")
        req = await fake.wait_for("POST", f"/channels/{fake.channel_id}/messages", timeout=T)
        assert str(req.json["message_reference"]["message_id"]) == str(msg.id)
        assert req.headers["Authorization"] == f"Bot {fake.token}"
        # Discord echoes the bot's own message back over the gateway.
        echo = await next_item(bot.inbox, "echo of the bot's reply", lambda m: m.author == bot.user)
        assert echo.id == reply.id and echo.reference.message_id == msg.id

        # Edit.
        draft = await msg.channel.send("draft")
        edited = await draft.edit(content="final")
        req = await fake.wait_for("PATCH", f"/messages/{draft.id}", timeout=T)
        assert req.json["content"] == "final" and edited.edited_at is not None
        assert fake.messages[str(draft.id)]["content"] == "final"

        # 429: discord.py waits retry_after and retries.
        fake.rate_limit(f"/channels/{fake.channel_id}/messages", times=1, retry_after=0.3, method="POST")
        started = time.monotonic()
        await msg.channel.send("after the limit")
        assert time.monotonic() - started >= 0.3
        limited = fake.find("POST", f"/channels/{fake.channel_id}/messages")[-2:]
        assert [r.status for r in limited] == [429, 200]

        # Typing, reactions, history, and an injected failure.
        async with msg.channel.typing():
            pass
        assert fake.typing[-1] == fake.channel_id
        await msg.add_reaction("\N{HOURGLASS}")
        assert fake.reactions[-1] == ("PUT", fake.channel_id, str(msg.id), "\N{HOURGLASS}")
        history = [m async for m in msg.channel.history(limit=3)]
        assert [m.content for m in history][0] == "after the limit" and len(history) == 3
        fake.fail_next(f"/channels/{fake.channel_id}/messages", 403,
                       {"message": "Missing Permissions", "code": 50013}, method="POST")
        with pytest.raises(discord.Forbidden):
            await msg.channel.send("refused")

        # A DM: discord.py resolves the DM channel from the message alone.
        await fake.dispatch("MESSAGE_CREATE", fake.message_create_dm("private question"))
        dm = await next_item(bot.inbox, "on_message (DM)", from_user)
        assert isinstance(dm.channel, discord.DMChannel) and dm.guild is None and dm.content == "private question"
        await dm.channel.send("private answer")
        await fake.wait_for("POST", f"/channels/{fake.dm_channel_id}/messages", timeout=T)

        # A reply from a user to the bot's message.
        await fake.dispatch("MESSAGE_CREATE", fake.message_create_reply("follow-up", fake.messages[str(reply.id)]))
        user_reply = await next_item(bot.inbox, "on_message (reply)", from_user)
        assert user_reply.reference.message_id == reply.id
        assert user_reply.reference.resolved.author == bot.user

        # An image attachment, downloaded with Attachment.read().
        image = png(5, 4)
        await fake.dispatch("MESSAGE_CREATE", fake.message_create_image(image, content="what is this?"))
        pic = await next_item(bot.inbox, "on_message (image)", from_user)
        (att,) = pic.attachments
        assert att.content_type == "image/png" and (att.width, att.height) == (5, 4)
        assert await asyncio.wait_for(att.read(), T) == image

        # A voice message.
        await fake.dispatch("MESSAGE_CREATE", fake.message_create_voice(OGG, duration_secs=1.7))
        voice = await next_item(bot.inbox, "on_message (voice)", from_user)
        assert voice.flags.voice and voice.attachments[0].is_voice_message()
        assert voice.attachments[0].duration == 1.7 and len(voice.attachments[0].waveform) <= 256
        assert await asyncio.wait_for(voice.attachments[0].read(), T) == OGG

        # Sending a voice message the way an adapter has to with discord.py 2.7 (raw route).
        support = fake.support_channel_id
        payload = {"flags": MessageFlags.IS_VOICE_MESSAGE, "attachments": [
            {"id": "0", "filename": "voice-message.ogg", "duration_secs": 1.0,
             "waveform": base64.b64encode(bytes(range(0, 200, 4))).decode()}]}
        file = discord.File(io.BytesIO(OGG), filename="voice-message.ogg")
        form = [{"name": "payload_json", "value": discord.utils._to_json(payload)},
                {"name": "files[0]", "value": file.fp, "filename": file.filename,
                 "content_type": "application/octet-stream"}]
        route = discord.http.Route("POST", "/channels/{channel_id}/messages", channel_id=support)
        data = await bot.http.request(route, files=[file], form=form)
        assert data["flags"] == 8192 and fake.attachment_bytes(data["attachments"][0]) == OGG

        # ... or with the upload-URL flow Discord's own clients use.
        slots = await bot.http.request(
            discord.http.Route("POST", "/channels/{channel_id}/attachments", channel_id=support),
            json={"files": [{"filename": "voice-message.ogg", "file_size": len(OGG), "id": "0"}]})
        slot = slots["attachments"][0]
        async with aiohttp.ClientSession() as http:
            async with http.put(slot["upload_url"], data=OGG, headers={"Content-Type": "audio/ogg"}) as r:
                assert r.status == 200
        payload["attachments"][0]["uploaded_filename"] = slot["upload_filename"]
        data = await bot.http.request(route, json=payload)
        assert fake.attachment_bytes(data["attachments"][0]) == OGG
        with pytest.raises(discord.HTTPException) as exc:
            await bot.http.request(route, json={"content": "x" * 2001})
        assert exc.value.status == 400 and exc.value.code == ErrorCode.INVALID_FORM_BODY


async def test_client_commands_interactions_and_components(fake):
    async with running(fake) as bot:
        synced = await bot.tree.sync()
        put = await fake.wait_for("PUT", f"/applications/{fake.application_id}/commands", timeout=T)
        assert [c["name"] for c in put.json] == ["ask"] and [c.name for c in synced] == ["ask"]
        assert fake.global_commands[0]["options"][0]["name"] == "question"

        # Slash command: defer, then a follow-up (which fills in the deferred message).
        payload = fake.interaction_command("ask", {"question": "why?"})
        await fake.dispatch("INTERACTION_CREATE", payload)
        interaction, followup = await next_item(bot.answered, "the /ask handler")
        assert interaction.id == int(payload["id"]) and interaction.channel.id == int(fake.channel_id)
        cb = await fake.wait_for("POST", f"/interactions/{payload['id']}/", timeout=T)
        assert cb.json == {"type": 5} and cb.query.get("with_response") == "1"
        assert cb.response["interaction"]["response_message_loading"] is True
        hook = await fake.wait_for("POST", f"/webhooks/{fake.application_id}/{payload['token']}", timeout=T)
        assert hook.json["content"] == "answer to: why?" and hook.status == 200
        state = fake.interaction_state(payload)
        original = fake.messages[state.original_message_id]
        assert original["content"] == "answer to: why?" and not original["flags"] & MessageFlags.LOADING
        assert followup.id == int(state.original_message_id)
        # Editing the original response afterwards.
        await interaction.edit_original_response(content="better answer")
        await fake.wait_for("PATCH", "/messages/@original", timeout=T)
        assert fake.messages[state.original_message_id]["content"] == "better answer"

        # A button on a message the bot sent, answered by editing that message (type 7).
        clicked = asyncio.Event()

        class Confirm(discord.ui.View):
            @discord.ui.button(label="Yes", custom_id="confirm-yes")
            async def yes(self, inter: discord.Interaction, button: discord.ui.Button) -> None:
                await inter.response.edit_message(content="confirmed", view=None)
                clicked.set()

        channel = bot.get_channel(int(fake.support_channel_id))
        sent = await channel.send("Proceed?", view=Confirm(timeout=None))
        await fake.dispatch("INTERACTION_CREATE", fake.interaction_button("confirm-yes", fake.messages[str(sent.id)]))
        await asyncio.wait_for(clicked.wait(), T)
        cb = await fake.wait_for("POST", "/callback", predicate=lambda r: r.json["type"] == 7, timeout=T)
        assert cb.status == 200 and fake.messages[str(sent.id)]["content"] == "confirmed"
        assert fake.messages[str(sent.id)]["components"] == []


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


async def test_threads_from_messages_and_role_pings_as_discord_documents(fake):
    # https://discord.com/developers/docs/resources/channel#start-thread-from-message
    api, sid = fake.api_base, fake.support_channel_id
    role = fake.add_role("Support", mentionable=False)
    question = fake.message_create_guild("how do I reset my password?", channel_id=sid)
    async with running(fake) as bot:
        parent = bot.get_channel(int(sid))
        thread = await parent.get_partial_message(int(question["id"])).create_thread(name="reset")
        assert thread.id == int(question["id"]) and thread.parent_id == int(sid)     # the message's id
        event = await fake.wait_for_dispatch("THREAD_CREATE", timeout=T)
        assert event["newly_created"] is True and event["type"] == 11 and event["guild_id"] == fake.guild_id
        for _ in range(int(T / 0.02)):           # THREAD_CREATE fills discord.py's cache
            if bot.get_channel(thread.id) is not None:
                break
            await asyncio.sleep(0.02)
        cached = bot.get_channel(thread.id)
        assert isinstance(cached, discord.Thread) and cached.name == "reset"
        sent = await thread.send("Here is how.")
        assert fake.messages[str(sent.id)]["channel_id"] == question["id"]          # channel_id = thread id
        assert fake.channels[question["id"]]["message_count"] == 1
        assert fake.messages[question["id"]]["thread"]["id"] == question["id"]
        # a role that is not mentionable is not pinged by a bot without MENTION_EVERYONE
        ping = await thread.send(f"<@&{role}> help", allowed_mentions=discord.AllowedMentions(roles=True))
        assert fake.messages[str(ping.id)]["mention_roles"] == []
        for r in fake.guilds[fake.guild_id]["roles"]:
            if r["id"] == role:
                r["mentionable"] = True
        ping = await thread.send(f"<@&{role}> help", allowed_mentions=discord.AllowedMentions.none())
        assert fake.messages[str(ping.id)]["mention_roles"] == []                # not allowed
        ping = await thread.send(f"<@&{role}> help",
                                 allowed_mentions=discord.AllowedMentions(roles=[discord.Object(int(role))]))
        assert fake.messages[str(ping.id)]["mention_roles"] == [role]

    async with aiohttp.ClientSession() as http:
        async def post(path, body, status, code):
            async with http.post(f"{api}{path}", json=body, headers=AUTH) as r:
                got = await r.json()
                assert r.status == status and got["code"] == code, (path, r.status, got)
                return got

        other = fake.message_create_guild("another question", channel_id=sid)
        start = f"/channels/{sid}/messages/{other['id']}/threads"
        bad = await post(start, {"name": ""}, 400, ErrorCode.INVALID_FORM_BODY)
        assert "name" in bad["errors"]
        await post(start, {"name": "x" * 101}, 400, ErrorCode.INVALID_FORM_BODY)
        await post(start, {"name": "ok", "auto_archive_duration": 30}, 400, ErrorCode.INVALID_FORM_BODY)
        await post(f"/channels/{sid}/messages/{question['id']}/threads", {"name": "again"}, 400,
                   ErrorCode.THREAD_ALREADY_CREATED)
        await post(f"/channels/{sid}/messages/1/threads", {"name": "x"}, 404, ErrorCode.UNKNOWN_MESSAGE)
        in_thread = fake.message_create_guild("in the thread", channel_id=question["id"])
        await post(f"/channels/{question['id']}/messages/{in_thread['id']}/threads", {"name": "x"}, 400,
                   ErrorCode.INVALID_CHANNEL_TYPE)
        await post(f"/channels/{sid}/messages", {"content": "x", "allowed_mentions": {
            "parse": ["roles"], "roles": [role]}}, 400, ErrorCode.INVALID_FORM_BODY)
        bot_role = next(r for r in fake.guilds[fake.guild_id]["roles"] if r["id"] == fake.guilds[fake.guild_id]["bot_role_id"])
        everyone = next(r for r in fake.guilds[fake.guild_id]["roles"] if r["id"] == fake.guild_id)
        for r in (bot_role, everyone):          # a bot invited without Create Public Threads
            r["permissions"] = str(int(r["permissions"]) & ~(1 << 35))
        await post(start, {"name": "ok"}, 403, ErrorCode.MISSING_PERMISSIONS)


async def test_modals_are_checked_as_discord_checks_them(fake):
    # https://discord.com/developers/docs/interactions/receiving-and-responding#interaction-response-object-modal
    fake.global_commands = [fake._command_object({"name": "ask", "description": "Ask"}, None, None)]

    def text_input(cid, **kw):
        return {"type": 1, "components": [dict({"type": 4, "custom_id": cid, "label": cid.title(), "style": 1}, **kw)]}

    good = {"custom_id": "form", "title": "A form", "components": [text_input("name", required=True, max_length=20)]}
    bad = [
        dict(good, title="x" * 46),
        dict(good, custom_id="x" * 101),
        dict(good, components=[]),
        dict(good, components=[text_input(f"f{i}") for i in range(6)]),
        dict(good, components=[text_input("a", style=3)]),
        dict(good, components=[{"type": 1, "components": [{"type": 4, "custom_id": "a", "style": 1}]}]),  # no label
        dict(good, components=[text_input("a"), text_input("a")]),
        dict(good, components=[text_input("a", min_length=5, max_length=2)]),
        dict(good, components=[{"type": 2, "custom_id": "b", "style": 1, "label": "button"}]),
    ]
    async with aiohttp.ClientSession() as http:
        for data in bad:
            inter = fake.interaction_command("ask")
            url = f"{fake.api_base}/interactions/{inter['id']}/{inter['token']}/callback"
            async with http.post(url, json={"type": 9, "data": data}) as r:
                assert r.status == 400 and (await r.json())["code"] == ErrorCode.INVALID_FORM_BODY, data
        inter = fake.interaction_command("ask")
        url = f"{fake.api_base}/interactions/{inter['id']}/{inter['token']}/callback"
        async with http.post(url, json={"type": 9, "data": good}) as r:
            assert r.status == 204
    with pytest.raises(ValueError):
        fake.interaction_modal_submit(inter, {})                       # required, left empty
    with pytest.raises(ValueError):
        fake.interaction_modal_submit(inter, {"name": "x" * 21})       # over max_length
    with pytest.raises(ValueError):
        fake.interaction_modal_submit(inter, {"name": "Ada", "age": "36"})
    submit = fake.interaction_modal_submit(inter, {"name": "Ada"})
    assert submit["type"] == 5 and submit["data"]["custom_id"] == "form"
    assert submit["data"]["components"][0]["components"][0] == {"type": 4, "id": 0, "custom_id": "name", "value": "Ada"}
