"""Slack as a team gets it out of the box: the real slack-bolt over Socket Mode against the
loopback SlackFake, and an engine on nothing but Confab's defaults (the model's own sampling,
max_tokens 1024, the automatic thread count and chat slots, the history window of 20 messages,
20 requests a minute per person). What it says is judged by the rate over several questions,
asked together as a channel would ask them, not by one answer."""
from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio

from engine import ChatJob, ChatMessage, Engine, Settings
from tests.bots.slack.conftest import running_confab
from tests.conftest import requires_chat_model, slack_settings
from tests.defaults import BAR, CAPITALS, rate
from tests.fakes.slack import SlackFake

pytestmark = [requires_chat_model, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(600)]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine(tmp_path_factory, shared_models_dir):
    e = Engine(Settings.from_env(env={}, dotenv=None, data_dir=str(tmp_path_factory.mktemp("defaults")),
                                 models_dir=str(shared_models_dir)))
    await e.start()
    warm = await e.submit(ChatJob(max_tokens=1, messages=[ChatMessage("user", "Hi")]))
    await asyncio.wait_for(warm.result(), 240)      # the model loaded before the acks are timed
    try:
        yield e
    finally:
        await e.close()


async def test_mentions_with_the_defaults_name_the_capitals(engine):
    s, door = engine.settings, slack_settings()
    assert (s.max_tokens, s.threads, s.chat_slots, s.history_messages, door.slack_user_rate) == (1024, 0, 0, 20, 20)
    fake = SlackFake(ack_deadline=30.0)
    await fake.start()
    try:
        # the rig turns the per-person rate off for its other tests; here it is the default
        async with running_confab(fake, "socket", engine, slack_user_rate=door.slack_user_rate) as confab:
            asked = []
            for country, capital in CAPITALS:
                for user in ("U1", "U2"):       # an admin (class 0) and anyone (class 1)
                    mention = await confab.mention(f"What is the capital of {country}?", user=user)
                    asked.append((mention, capital))
            answers = await asyncio.gather(*(confab.answer("C1", m["ts"], timeout=300) for m, _ in asked))
            for mention, _ in asked:
                await confab.settled(f"slack:C1:{mention['ts']}", timeout=300)
            for mention, _ in asked:      # one answer each, none refused by a limit
                (only,) = fake.bot_messages("C1", mention["ts"])
                assert "limit" not in only["text"].lower(), only["text"]
            assert rate([a["text"] for a in answers], [c for _, c in asked]) >= BAR, [a["text"] for a in answers]
            jobs = confab.jobs()
            assert len(jobs) == len(asked)
            # nothing set by the door: no sampling fields, the default cap on the answer's length
            assert all(j.get("temperature") is None and j.get("top_p") is None for j in jobs), jobs[0]
            assert {j["max_tokens"] for j in jobs} <= {None, s.max_tokens}, {j["max_tokens"] for j in jobs}
            await confab.idle()
        assert not fake.problems, fake.problems
    finally:
        await fake.stop()
