"""Per-person and per-key rates, the daily GPU-seconds budget, and the audit log."""
from __future__ import annotations

import asyncio
import sqlite3

import aiohttp
import pytest

from bots.api.app import create_app
from engine import ChatJob, ChatMessage, Origin
from engine.config import ConfigError, Settings
from engine.errors import BudgetExhausted, RateLimited
from engine.messages import explain
from engine.runtime.limits import Limits, SlidingWindow, day_start, principal, seconds_to_reset
from tests.conftest import make_settings
from tests.ops_helpers import chat_body, fake_engine, serve

DAY = 1_800_000_000.0 - 1_800_000_000.0 % 86400   # a UTC midnight


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_sliding_window_allows_the_limit_then_says_when():
    w = SlidingWindow(3, window=60)
    for t in (0, 1, 2):
        assert w.retry_after("a", t) is None
        w.hit("a", t)
    assert w.retry_after("a", 10) == pytest.approx(50)
    assert w.retry_after("b", 10) is None            # others are not affected
    assert w.retry_after("a", 60.5) is None          # the first hit left the window


def test_sliding_window_is_bounded_in_callers():
    w = SlidingWindow(1, max_keys=100)
    for i in range(1000):
        w.hit(f"u{i}", 0)
    assert len(w._hits) == 100


def test_principal_is_the_key_on_the_api_and_the_person_elsewhere():
    assert principal(Origin(platform="api", user="key-abc/alice")) == "api:key-abc"
    assert principal(Origin(platform="api", user="anonymous")) == "api:anonymous"
    assert principal(Origin(platform="slack", user="U1")) == "slack:U1"
    assert principal("discord:42") == "discord:42"


def test_user_rate_then_key_rate():
    clock = Clock(DAY + 100)
    limits = Limits(user_rpm=2, key_rpm=3, clock=clock)
    alice, bob = Origin(platform="api", user="key-k/alice"), Origin(platform="api", user="key-k/bob")
    limits.check(alice)
    limits.check(alice)
    with pytest.raises(RateLimited) as e:
        limits.check(alice)
    assert e.value.limit == "requests per minute per user" and 0 < e.value.retry_after <= 60
    limits.check(bob)                                 # the key's third request
    with pytest.raises(RateLimited) as e:
        limits.check(bob)
    assert e.value.limit == "requests per minute per key" and e.value.status == 429
    clock.now += 61
    limits.check(bob)


def test_budget_counts_run_time_of_every_kind_and_resets_at_midnight():
    clock = Clock(DAY + 3600)
    limits = Limits(daily_gpu_s=10, clock=clock)
    carol = Origin(platform="slack", user="U9")
    limits.check(carol)
    limits.charge(carol, 6)            # a chat job
    limits.charge("slack:U9", 4.5)     # an image job, charged by user key
    with pytest.raises(BudgetExhausted) as e:
        limits.check(carol)
    assert e.value.retry_after == pytest.approx(86400 - 3600)
    assert e.value.code == "insufficient_quota"
    text = explain(e.value)
    assert "GPU-seconds" in text and "resets" in text and "h" in text
    limits.check(Origin(platform="slack", user="U9", is_admin=True))   # admins are not limited
    clock.now = DAY + 86400 + 1
    limits.check(carol)
    assert limits.usage()[0].gpu_s_today == 0


def test_api_budget_cannot_be_dodged_with_the_user_field():
    limits = Limits(daily_gpu_s=5, clock=Clock(DAY + 10))
    limits.charge(Origin(platform="api", user="key-k/alice"), 5)
    with pytest.raises(BudgetExhausted):
        limits.check(Origin(platform="api", user="key-k/someone-else"))


def test_rate_limit_words_for_people():
    e = RateLimited("You have made 5 requests in the last minute; the limit is 5 per minute.",
                    retry_after=42, limit="requests per minute per user", maximum=5)
    assert explain(e).startswith("🚦") and "42 s" in explain(e)
    assert seconds_to_reset(DAY + 1) == pytest.approx(86399)
    assert day_start(DAY + 5000) == DAY


@pytest.mark.parametrize("env", [{"CONFAB_USER_RATE": "-1"}, {"CONFAB_KEY_RATE": "-2"},
                                 {"CONFAB_DAILY_GPU_SECONDS": "-5"}])
def test_negative_limits_are_refused_by_name(env):
    with pytest.raises(ConfigError, match=next(iter(env))):
        Settings.from_env(env=env, dotenv=None)


async def test_engine_refuses_at_submit_and_audits_who_asked(tmp_path):
    engine = fake_engine(make_settings(tmp_path, user_rate=2))
    await engine.start()
    try:
        origin = Origin(platform="discord", user="77")
        for _ in range(2):
            handle = await engine.submit(ChatJob(messages=[ChatMessage("user", "hi")], origin=origin))
            await asyncio.wait_for(handle.result(), 10)
        with pytest.raises(RateLimited):
            await engine.submit(ChatJob(messages=[ChatMessage("user", "hi")], origin=origin))
        assert engine.limits.usage()[0].who == "discord:77"
    finally:
        await engine.close()
    rows = sqlite3.connect(tmp_path / "confab.db").execute("SELECT user, action, detail FROM audit").fetchall()
    assert [(u, a) for u, a, _ in rows] == [("discord:77", "submit:chat")] * 2 + [("discord:77", "refused:chat")]
    assert "rate_limit_exceeded" in rows[-1][2] and "fake-chat" in rows[0][2]


async def test_budget_survives_a_restart(tmp_path):
    engine = fake_engine(make_settings(tmp_path, daily_gpu_seconds=0.05), token_s=0.02)
    await engine.start()
    origin = Origin(platform="slack", user="U1")
    try:
        handle = await engine.submit(ChatJob(messages=[ChatMessage("user", "hi")], origin=origin))
        await asyncio.wait_for(handle.result(), 10)     # 5 tokens x 20 ms: over 0.05 s
        with pytest.raises(BudgetExhausted):
            await engine.submit(ChatJob(messages=[ChatMessage("user", "hi")], origin=origin))
    finally:
        await engine.close()
    again = fake_engine(make_settings(tmp_path, daily_gpu_seconds=0.05))
    await again.start()
    try:
        with pytest.raises(BudgetExhausted):
            await again.submit(ChatJob(messages=[ChatMessage("user", "hi")], origin=origin))
    finally:
        await again.close()


async def test_api_answers_429_with_retry_after_per_key(tmp_path):
    engine = fake_engine(make_settings(tmp_path, key_rate=3, api_keys=("k-one", "k-two")))
    await engine.start()
    runner, base = await serve(create_app(engine))
    try:
        async with aiohttp.ClientSession() as s:
            one = {"Authorization": "Bearer k-one"}
            for user in ("a", "b", "c"):
                async with s.post(f"{base}/v1/chat/completions", json=chat_body(user=user), headers=one) as r:
                    assert r.status == 200
            async with s.post(f"{base}/v1/chat/completions", json=chat_body(user="d"), headers=one) as r:
                assert r.status == 429
                assert 1 <= int(r.headers["Retry-After"]) <= 60
                err = (await r.json())["error"]
                assert err["code"] == "rate_limit_exceeded" and err["type"] == "rate_limit_error"
                assert "per minute" in err["message"]
            async with s.post(f"{base}/v1/chat/completions", json=chat_body(),
                              headers={"Authorization": "Bearer k-two"}) as r:
                assert r.status == 200          # another key has its own allowance
    finally:
        await runner.cleanup()
        await engine.close()


class RecordingReply:
    """A chat reply that keeps what it was told to post."""

    def __init__(self):
        self.said: list[str] = []

    async def say(self, text: str):
        self.said.append(text)

    async def stream(self, chunks, status: str = "") -> str:
        text = "".join([c async for c in chunks])
        self.said.append(text)
        return text

    async def update(self, ref, text: str) -> None:
        self.said.append(text)

    async def send_file(self, data: bytes, filename: str, title: str = "", **kw) -> None:
        self.said.append(f"<file {filename}>")

    async def private(self, text: str):
        self.said.append(text)


async def test_chat_users_get_a_clear_message_when_over_a_limit(tmp_path):
    from bots.common.commands import Commands, Request
    engine = fake_engine(make_settings(tmp_path, user_rate=1, daily_gpu_seconds=3600))
    await engine.start()
    try:
        commands = Commands(engine)
        origin = Origin(platform="slack", user="U5", channel="C1")
        first, second = RecordingReply(), RecordingReply()
        await asyncio.wait_for(commands.handle(Request(origin, "slack:C1", "/ask hello"), first), 20)
        assert "fake model" in first.said[-1]
        await asyncio.wait_for(commands.handle(Request(origin, "slack:C1", "/ask again"), second), 20)
        (message,) = second.said
        assert message.startswith("🚦") and "1 per minute" in message and "Try again in about" in message
    finally:
        await engine.close()


async def test_budget_follows_the_store_that_workers_write():
    """With scale-out the front never runs jobs: it learns run time from the shared store."""
    class Store:
        totals = {"api:key-k/alice": 30.0, "api:key-k/bob": 40.0, "slack:U1": 5.0}
        reads = 0

        async def run_seconds_since(self, since):
            Store.reads += 1
            return dict(Store.totals)

    clock = Clock(DAY + 100)
    limits = Limits(daily_gpu_s=60, clock=clock)
    store = Store()
    await limits.refresh(store, every_s=0)
    with pytest.raises(BudgetExhausted):                 # 30 + 40 under one key
        limits.check(Origin(platform="api", user="key-k/carol"))
    limits.check(Origin(platform="slack", user="U1"))
    limits.charge("slack:U1", 10)                        # charged here, not yet in the store
    await limits.refresh(store)                          # too soon: not read again
    assert Store.reads == 1
    clock.now += 61
    await limits.refresh(store)
    assert Store.reads == 2
    assert {u.who: u.gpu_s_today for u in limits.usage()}["slack:U1"] == 15   # never lowered
