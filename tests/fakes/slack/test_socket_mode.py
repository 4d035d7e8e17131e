"""The Slack fake's Socket Mode, driven by the real slack-bolt."""

from __future__ import annotations

import pytest
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp

from tests.fakes.slack import SlackFake
from tests.fakes.slack.conftest import client_for

pytestmark = pytest.mark.timeout(30)


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
