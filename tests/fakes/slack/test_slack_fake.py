"""Self-test of the Slack fake, driven by the real slack-sdk and slack-bolt."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.signature import Clock, SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack import SlackFake
from tests.fakes.slack.http_mode import PUBLISHED_SIGNING_VECTOR, sign
from tests.fakes.slack.protocol import FIXTURES_DIR

pytestmark = pytest.mark.timeout(30)

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest_asyncio.fixture
async def fake():
    async with SlackFake() as f:
        yield f


def client_for(fake: SlackFake, token=None, **kw) -> AsyncWebClient:
    return AsyncWebClient(token=fake.bot_token if token is None else token, base_url=fake.api_url, **kw)


async def api_error(coro) -> str:
    with pytest.raises(SlackApiError) as e:
        await coro
    return e.value.response["error"]


# ---------------------------------------------------------------- Web API


@pytest.mark.asyncio
async def test_web_api_auth_and_messages(fake: SlackFake):
    client = client_for(fake)
    auth = await client.auth_test()
    assert auth["user_id"] == fake.bot_user_id == "UBOT"
    assert auth["bot_id"] == fake.bot_id and auth["team_id"] == "T1"
    assert fake.api_url.endswith("/api/") and fake.api_url.startswith(fake.base_url)

    assert await api_error(client_for(fake, token="xoxb-wrong").auth_test()) == "invalid_auth"
    assert await api_error(AsyncWebClient(base_url=fake.api_url).auth_test()) == "not_authed"
    assert await api_error(client_for(fake, token=fake.app_token).chat_postMessage(channel="C1", text="x")) \
        == "not_allowed_token_type"
    assert await api_error(client.apps_connections_open(app_token=fake.bot_token)) == "not_allowed_token_type"
    assert await api_error(client.api_call("foo.bar")) == "unknown_method"

    # postMessage: validated like Slack
    with pytest.warns(UserWarning):  # the SDK warns, Slack refuses
        assert await api_error(client.chat_postMessage(channel="C1")) == "no_text"
    assert await api_error(client.chat_postMessage(channel="C404", text="x")) == "channel_not_found"
    assert await api_error(client.chat_postMessage(channel="C2", text="x")) == "not_in_channel"
    assert await api_error(client.chat_postMessage(channel="C1", text="x", thread_ts="nope")) == "invalid_thread_ts"
    bad_blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}]
    err = await api_error(client.chat_postMessage(channel="C1", text="x", blocks=bad_blocks))
    assert err == "invalid_blocks"

    parent = fake.message_event("a user asks", user="U1", channel="C1")
    r = await client.chat_postMessage(channel="C1", text="thinking…", thread_ts=parent["ts"])
    ts = r["ts"]
    assert r["channel"] == "C1" and r["message"]["bot_id"] == fake.bot_id
    call = await fake.wait_for("chat.postMessage", lambda c: c.ok, timeout=2)
    assert call.params["thread_ts"] == parent["ts"] and call.headers["Authorization"] == "Bearer xoxb-test"

    up = await client.chat_update(channel="C1", ts=ts, text="the answer")
    assert up["text"] == "the answer"
    assert await api_error(client.chat_update(channel="C1", ts="1.000001", text="x")) == "message_not_found"
    assert await api_error(client.chat_update(channel="C1", ts=parent["ts"], text="x")) == "cant_update_message"
    thread = fake.messages("C1", parent["ts"])
    assert [m["text"] for m in thread] == ["a user asks", "the answer"]
    assert thread[1]["edited"]["user"] == "UBOT"

    replies = await client.conversations_replies(channel="C1", ts=parent["ts"])
    assert [m["ts"] for m in replies["messages"]] == [parent["ts"], ts]
    assert replies["messages"][0]["reply_count"] == 1
    assert await api_error(client.conversations_replies(channel="C1", ts="1.000002")) == "thread_not_found"
    history = await client.conversations_history(channel="C1")
    assert [m["ts"] for m in history["messages"]] == [parent["ts"]]  # replies stay in their thread

    eph = await client.chat_postEphemeral(channel="C1", user="U2", text="only you")
    assert eph["message_ts"] and fake.ephemerals[-1]["for_user"] == "U2"
    await client.reactions_add(channel="C1", timestamp=parent["ts"], name="eyes")
    assert await api_error(client.reactions_add(channel="C1", timestamp=parent["ts"], name="eyes")) \
        == "already_reacted"
    assert (await client.users_info(user="U1"))["user"]["name"] == "alice"
    assert await api_error(client.users_info(user="U404")) == "user_not_found"
    await client.chat_delete(channel="C1", ts=ts)
    assert fake.messages("C1", parent["ts"])[-1]["ts"] == parent["ts"]

    # a reply to a thread that does not exist: Slack says ok, and nobody sees it
    await client.chat_postMessage(channel="C1", text="lost", thread_ts="1500000000.000100")
    assert fake.orphans and any("no such message" in p for p in fake.problems)

    # JSON bodies need the token in the header, as on Slack; form bodies may carry it
    auth = {"Authorization": f"Bearer {fake.bot_token}"}
    async with aiohttp.ClientSession() as s:
        async with s.post(fake.api_url + "chat.postMessage", json={"token": fake.bot_token, "channel": "C1",
                                                                   "text": "x"}) as resp:
            assert (await resp.json())["error"] == "not_authed"
        async with s.post(fake.api_url + "chat.postMessage",
                          data={"token": fake.bot_token, "channel": "C1", "text": "form"}) as resp:
            assert (await resp.json())["ok"]
        form = aiohttp.FormData({"channel": "C1", "text": "multipart"})
        form.add_field("token", fake.bot_token)
        async with s.post(fake.api_url + "chat.postMessage", data=form) as resp:
            assert (await resp.json())["ok"]
        async with s.post(fake.api_url + "users.info", json={"user": "U1"}, headers=auth) as resp:
            assert (await resp.json())["error"] == "user_not_found"  # users.info takes no JSON body


@pytest.mark.asyncio
async def test_views_open_needs_a_fresh_trigger(fake: SlackFake):
    client = client_for(fake)
    view = {"type": "modal", "title": {"type": "plain_text", "text": "Ask"},
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}]}
    assert await api_error(client.views_open(trigger_id="1.2.3", view=view)) == "invalid_arguments"
    trigger = fake.slash_commands("/ask", "x")["trigger_id"]
    r = await client.views_open(trigger_id=trigger, view=view)
    assert r["view"]["id"].startswith("V") and fake.views[-1]["user"] == "U1"
    assert await api_error(client.views_open(trigger_id=trigger, view=view)) == "exchanged_trigger_id"
    fake.trigger_ttl = 0.0
    stale = fake.slash_commands("/ask", "x")["trigger_id"]
    assert await api_error(client.views_open(trigger_id=stale, view=view)) == "expired_trigger_id"


@pytest.mark.asyncio
async def test_rate_limit_429_and_retry(fake: SlackFake):
    fake.rate_limit("chat.postMessage", times=1, retry_after=1)
    with pytest.raises(SlackApiError) as e:
        await client_for(fake).chat_postMessage(channel="C1", text="x")
    assert e.value.response.status_code == 429 and e.value.response["error"] == "ratelimited"
    assert e.value.response.headers["Retry-After"] in ("1", ["1"])

    fake.rate_limit("chat.postMessage", times=1, retry_after=1)
    client = client_for(fake, retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)])
    t0 = time.monotonic()
    r = await client.chat_postMessage(channel="C1", text="after the wait")
    assert r["ok"] and time.monotonic() - t0 >= 1.0
    statuses = [c.status for c in fake.calls_to("chat.postMessage")]
    assert statuses == [429, 429, 200]


@pytest.mark.asyncio
async def test_files_upload_v2_and_private_download(fake: SlackFake):
    client = client_for(fake)
    parent = fake.message_event("draw me a cat", channel="C1")
    r = await client.files_upload_v2(channel="C1", thread_ts=parent["ts"], content=PNG, filename="cat.png",
                                     title="A cat", initial_comment="here you go")
    f = r["file"]
    assert f["name"] == "cat.png" and f["mimetype"] == "image/png" and f["title"] == "A cat"
    assert f["shares"] == {}  # as on Slack: sharing happens after the call returns
    upload = await fake.wait_for("upload", timeout=2)
    assert upload.body == PNG and "Authorization" not in upload.headers
    done = await fake.wait_for("files.completeUploadExternal", timeout=2)
    assert done.params["channel_id"] == "C1" and done.params["thread_ts"] == parent["ts"]
    assert done.params["initial_comment"] == "here you go"

    msg = await fake.wait_message("C1", lambda m: m.get("files"), thread_ts=parent["ts"], timeout=2)
    assert msg["text"] == "here you go" and msg["files"][0]["id"] == f["id"]
    info = await client.files_info(file=f["id"])
    assert info["file"]["shares"]["public"]["C1"][0]["thread_ts"] == parent["ts"]
    assert fake.file_contents[f["id"]] == PNG

    url = f["url_private_download"]
    assert url.startswith(fake.base_url + "files/")
    async with aiohttp.ClientSession() as s:
        async with s.get(url) as resp:  # no token: Slack answers 200 with its HTML login page
            assert resp.status == 200 and resp.content_type == "text/html"
            assert b"Sign in" in await resp.read()
        async with s.get(url, headers={"Authorization": "Bearer xoxb-other"}) as resp:
            assert resp.content_type == "text/html"
        async with s.get(url, headers={"Authorization": f"Bearer {fake.bot_token}"}) as resp:
            assert resp.status == 200 and resp.content_type == "image/png" and await resp.read() == PNG

    # the upload URL also takes multipart, as Slack's does
    url_r = await client.files_getUploadURLExternal(filename="note.txt", length=5)
    form = aiohttp.FormData()
    form.add_field("filename", b"hello", filename="note.txt", content_type="text/plain")
    async with aiohttp.ClientSession() as s:
        async with s.post(url_r["upload_url"], data=form) as resp:
            assert resp.status == 200 and await resp.text() == "OK - 5"
    done = await client.files_completeUploadExternal(files=[{"id": url_r["file_id"], "title": "note"}])
    assert done["files"][0]["id"] == url_r["file_id"] and fake.file_contents[url_r["file_id"]] == b"hello"

    # an upload that was never sent cannot be completed
    url_r = await client.files_getUploadURLExternal(filename="x.txt", length=3)
    assert await api_error(client.files_completeUploadExternal(files=[{"id": url_r["file_id"]}])) == "file_not_found"


@pytest.mark.asyncio
async def test_event_builders_have_slacks_shapes(fake: SlackFake):
    mention, message = fake.mention_pair("<@UBOT> what is up?", user="U2", channel="C1")
    assert mention["type"] == "app_mention" and message["type"] == "message"
    assert mention["ts"] == message["ts"] == mention["event_ts"]
    assert "channel_type" not in mention and message["channel_type"] == "channel"
    assert mention["blocks"][0]["elements"][0]["elements"][0] == {"type": "user", "user_id": "UBOT"}
    body = fake.events_api(mention)
    assert body["type"] == "event_callback" and body["authorizations"][0]["user_id"] == "UBOT"
    assert body["team_id"] == "T1" and body["api_app_id"] == fake.app_id and body["event_id"].startswith("Ev")

    dm = fake.im_event("hi", user="U1")
    assert dm["channel_type"] == "im" and dm["channel"].startswith("D")

    clip = fake.audio_clip_event(b"\x1aE\xdf\xa3webm", mimetype="audio/webm", duration_ms=2500, channel="C1")
    f = clip["files"][0]
    assert clip["subtype"] == "file_share" and f["subtype"] == "slack_audio"
    assert f["mimetype"] == "audio/webm" and f["filetype"] == "webm" and f["duration_ms"] == 2500
    assert len(f["audio_wave_samples"]) == 100 and f["url_private_download"].startswith(fake.base_url)
    mp4 = fake.audio_clip_file(b"....ftypM4A ", mimetype="audio/mp4")
    assert mp4["mimetype"] == "audio/mp4" and mp4["filetype"] == "m4a"

    img = fake.file_share_event([fake.image_file(PNG)], text="what is this?")
    assert img["subtype"] == "file_share" and img["files"][0]["mimetype"] == "image/png"

    bot = fake.bot_message_event("beep")
    assert bot["subtype"] == "bot_message" and "user" not in bot

    slash = fake.slash_commands("/ask", "why?")
    assert all(isinstance(v, str) for v in slash.values())
    assert slash["response_url"].startswith(fake.base_url) and slash["channel_name"] == "general"

    for path in FIXTURES_DIR.glob("*.json"):
        assert json.loads(path.read_text())["_source"].startswith("https://api.slack.com/"), path.name


# ---------------------------------------------------------------- Socket Mode


@pytest.mark.asyncio
async def test_socket_mode_with_bolt(fake: SlackFake):
    client = client_for(fake)
    app = AsyncApp(client=client, signing_secret=fake.signing_secret)
    seen_messages: list = []
    actions: list = []

    @app.event("app_mention")
    async def on_mention(event, say):
        await say(text=f"answer to {event['user']}", thread_ts=event.get("thread_ts") or event["ts"])

    @app.event("message")
    async def on_message(event):
        seen_messages.append(event)

    @app.command("/ask")
    async def on_ask(ack, respond, command):
        await ack(text="on it")
        await respond(text=f"done: {command['text']}")

    @app.action("cancel")
    async def on_cancel(ack, body):
        await ack()
        actions.append(body["actions"][0]["value"])

    handler = AsyncSocketModeHandler(app, app_token=fake.app_token)
    await handler.connect_async()
    try:
        await fake.wait_connected(1, timeout=5)
        assert fake.calls_to("apps.connections.open")[0].headers["Authorization"] == "Bearer xapp-test"

        mention_id, message_id = await fake.send_mention("<@UBOT> how are you?", user="U2", channel="C1")
        assert (await fake.wait_ack(mention_id, 5))["envelope_id"] == mention_id
        await fake.wait_ack(message_id, 5)
        post = await fake.wait_for("chat.postMessage", timeout=5)
        assert post.ok and post.params["text"] == "answer to U2"
        reply = (await fake.wait_message("C1", lambda m: m.get("bot_id") == fake.bot_id, timeout=5))
        assert reply["thread_ts"] == fake.sent_envelopes[0]["payload"]["event"]["ts"]

        # the bot's own message comes back as an event, and bolt drops it (auth.test user == authorizations)
        await fake.wait_until(lambda: fake.echoed_envelopes, 5, "the echo")
        await fake.wait_ack(fake.echoed_envelopes[0], 5)
        assert [e["user"] for e in seen_messages] == ["U2"]

        cmd_id = await fake.send_slash_command("/ask", "the meaning")
        ack = await fake.wait_ack(cmd_id, 5)
        assert ack["payload"] == {"text": "on it"}
        await fake.wait_for("response_url", timeout=5)
        assert fake.response_url_posts[-1]["json"]["text"] == "done: the meaning"

        act_id = await fake.send_block_action("cancel", "job-7", channel="C1")
        await fake.wait_ack(act_id, 5)
        assert actions == ["job-7"]

        # Slack asks for a refresh: the client opens a new connection via apps.connections.open
        await fake.send_disconnect("refresh_requested", grace=0.5)
        await fake.wait_connected(2, timeout=5)
        assert len(fake.calls_to("apps.connections.open")) == 2
        await fake.wait_until(lambda: fake.connection_count == 1, 5, "the old connection to close")
        dm_id = await fake.send_event(fake.im_event("still there?", user="U1"))
        await fake.wait_ack(dm_id, 5)
        assert seen_messages[-1]["channel_type"] == "im"
        assert not [p for p in fake.problems if "acknowledged" in p]

        # no listener for an event: bolt does not ack, and Slack redelivers with retry_attempt
        fake.ack_deadline = 0.3
        unheard = {"type": "reaction_added", "user": "U1", "reaction": "eyes", "item_user": "UBOT",
                   "item": {"type": "message", "channel": "C1", "ts": reply["ts"]}, "event_ts": fake.new_ts()}
        lost_id = await fake.send_event(unheard)
        redelivery = await fake.wait_until(lambda: fake.redeliveries, 5, "a redelivery")
        assert redelivery[0]["of"] == lost_id and redelivery[0]["retry_attempt"] == 1
        again = next(e for e in fake.sent_envelopes if e["envelope_id"] == redelivery[0]["envelope_id"])
        assert again["retry_reason"] == "timeout" and again["payload"]["event"]["type"] == "reaction_added"
        assert any("not acknowledged" in p for p in fake.problems)
    finally:
        await handler.close_async()


# ---------------------------------------------------------------- HTTP mode


@pytest.mark.asyncio
async def test_http_mode_with_bolt(fake: SlackFake):
    app = AsyncApp(client=client_for(fake), signing_secret=fake.signing_secret)

    @app.command("/ask")
    async def on_ask(ack, command):
        await ack(text=f"asked: {command['text']}")

    @app.event("app_mention")
    async def on_mention(event, say):
        await say(text="hi", thread_ts=event["ts"])

    @app.event("message")
    async def on_message():
        pass

    @app.action("cancel")
    async def on_cancel(ack):
        await ack()

    runner = web.AppRunner(app.web_app(path="/slack/events"), handle_signals=False, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/slack/events"
    fake.request_url = url
    try:
        body = fake.slash_command_body("/ask", "why?")
        status, text = await fake.signed_post(url, body, fake.FORM)
        assert status == 200 and text == "asked: why?"  # bolt answers a text-only ack as text/plain
        assert (await fake.signed_post(url, body, fake.FORM, secret="not-the-secret"))[0] == 401
        stale = int(time.time()) - 301
        assert (await fake.signed_post(url, body, fake.FORM, timestamp=stale))[0] == 401

        challenge_body = fake.url_verification_body("chal-123")
        status, text = await fake.signed_post(url, challenge_body, fake.JSON)
        assert status == 200 and json.loads(text)["challenge"] == "chal-123"
        assert (await fake.signed_post(url, challenge_body, fake.JSON, secret="bad"))[0] == 401

        mention, message = fake.mention_pair(channel="C1")
        assert (await fake.signed_post(url, fake.event_callback_body(message), fake.JSON))[0] == 200
        assert (await fake.signed_post(url, fake.event_callback_body(mention), fake.JSON))[0] == 200
        post = await fake.wait_for("chat.postMessage", timeout=5)
        assert post.ok and post.params["thread_ts"] == mention["ts"]

        bot_msg = fake.bot_messages("C1")[-1]
        action = fake.block_actions_body("cancel", "job-1", channel="C1", message_ts=bot_msg["ts"])
        assert action.startswith(b"payload=")
        payload = json.loads(urllib.parse.unquote(action.decode()[len("payload="):]))
        assert payload["type"] == "block_actions" and payload["container"]["message_ts"] == bot_msg["ts"]
        assert (await fake.signed_post(url, action, fake.FORM))[0] == 200
    finally:
        fake.request_url = None
        await fake.stop()
        await runner.cleanup()


def test_published_signing_vector():
    v = PUBLISHED_SIGNING_VECTOR

    class Then(Clock):
        def now(self) -> float:
            return float(v["timestamp"])

    verifier = SignatureVerifier(v["signing_secret"], clock=Then())
    assert verifier.is_valid(v["body"], v["timestamp"], v["signature"])
    assert verifier.generate_signature(timestamp=v["timestamp"], body=v["body"]) == v["signature"]
    assert sign(v["signing_secret"], v["timestamp"], v["body"]) == v["signature"]
    assert not verifier.is_valid(v["body"] + "x", v["timestamp"], v["signature"])
    assert not SignatureVerifier(v["signing_secret"]).is_valid(v["body"], v["timestamp"], v["signature"])  # stale
    headers = SlackFake(signing_secret=v["signing_secret"]).sign_headers(v["body"].encode(), v["timestamp"])
    assert headers["X-Slack-Signature"] == v["signature"]


@pytest.mark.asyncio
async def test_wait_is_bounded(fake: SlackFake):
    with pytest.raises(asyncio.TimeoutError):
        await fake.wait_for("chat.postMessage", timeout=0.2)
    with pytest.raises(asyncio.TimeoutError):
        await fake.send_envelope("events_api", fake.events_api(fake.message_event("x")), timeout=0.2)
