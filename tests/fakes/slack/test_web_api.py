"""The Slack fake's Web API, driven by the real slack-sdk: tokens, messages, threads, rate limits."""

from __future__ import annotations

import time

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack import SlackFake
from tests.fakes.slack.conftest import api_error, client_for

pytestmark = pytest.mark.timeout(30)


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
