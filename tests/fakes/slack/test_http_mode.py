"""The Slack fake's HTTP mode, driven by the real slack-bolt, and Slack's published signing example."""

from __future__ import annotations

import json
import time
import urllib.parse

import pytest
from aiohttp import web
from slack_bolt.app.async_app import AsyncApp
from slack_sdk.signature import Clock, SignatureVerifier

from tests.fakes.slack import SlackFake
from tests.fakes.slack.conftest import client_for
from tests.fakes.slack.http_mode import PUBLISHED_SIGNING_VECTOR, sign

pytestmark = pytest.mark.timeout(30)


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
