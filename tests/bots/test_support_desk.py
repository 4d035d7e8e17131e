"""Support channels: who gets an answer, stand-down for people, escalation on a fake clock.

The channels here quote passages (answer_mode "excerpt"): the desk's rules are under test;
generated, grounded answers with SmolLM2 are tested in tests/engine/test_kb.py."""
from __future__ import annotations

import asyncio
import json

import pytest

from bots.common.channels import load_channels, parse_channels
from bots.common.support import SupportDesk, SupportMessage
from engine import ConfigError, Engine
from engine.kb import SupportDeskAnswerer, open_kb
from tests.conftest import make_settings
from tests.engine.test_kb import needs_kb, write_docs

CHANNELS = {
    "support_groups": {"helpdesk": {"slack_usergroup": "S0HELP", "discord_role": "777",
                                    "members": ["slack:UAGENT"]}},
    "support_channels": [
        {"platform": "slack", "channel": "CSUP", "group": "helpdesk", "escalate_minutes": 30,
         "answer_mode": "excerpt"},
        {"platform": "discord", "channel": "42", "group": "helpdesk", "when_unsure": "silent",
         "answer_mode": "excerpt"},
    ],
}


def test_channels_file(tmp_path):
    path = tmp_path / "channels.json"
    path.write_text(json.dumps(CHANNELS))
    config = load_channels(str(path))
    slack = config.support_for("slack", "CSUP")
    assert slack and config.support_for("slack", "COTHER") is None
    assert config.group_of(slack).mention("slack") == "<!subteam^S0HELP>"
    assert config.group_of(slack).mention("discord") == "<@&777>"
    assert config.is_support_member(slack, "UAGENT")
    assert config.is_support_member(slack, "USOMEONE", memberships=("S0HELP",))
    assert not config.is_support_member(slack, "UCUSTOMER")
    settings = make_settings(tmp_path)
    assert config.support_for("discord", "42").policy(settings).when_unsure == "silent"
    assert slack.policy(settings).when_unsure == settings.kb_when_unsure
    assert load_channels("").support == {}
    for bad in ({"support_channels": [{"platform": "irc", "channel": "x"}]},
                {"support_channels": [{"platform": "slack", "channel": "C", "group": "nobody"}]},
                {"support_channels": [{"platform": "slack", "channel": "C", "min_score": 3}]},
                {"support_channels": [{"platform": "slack", "channel": "C", "typo": 1}]}):
        with pytest.raises(ConfigError):
            parse_channels(bad)


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


@pytest.fixture
async def desk(tmp_path, shared_models_dir):
    engine = Engine(make_settings(tmp_path / "data", shared_models_dir))
    await engine.start()
    kb = open_kb(engine)
    await asyncio.wait_for(kb.add([write_docs(tmp_path / "docs")]), 120)
    clock = Clock()
    desk = SupportDesk(engine, SupportDeskAnswerer(engine, kb), parse_channels(CHANNELS), clock)
    try:
        yield desk, clock
    finally:
        kb.close()
        await engine.close()


def msg(text, id, user="UCUSTOMER", thread="", channel="CSUP", platform="slack", **kw):
    return SupportMessage(platform, channel, user, text, id, thread, **kw)


@needs_kb
async def test_answers_questions_leaves_the_rest_and_stands_down(desk):
    desk, clock = desk
    assert await desk.on_message(msg("hi all", "1.0")) is None
    assert await desk.on_message(msg("thanks! 🙏", "1.1")) is None
    assert await desk.on_message(msg("How do I reset my password?", "1.2", is_bot=True)) is None
    assert await desk.on_message(msg("How do I reset my password?", "1.3", channel="CGENERAL")) is None
    answer = await asyncio.wait_for(desk.on_message(msg("How do I reset my password?", "2.0")), 120)
    assert answer.kind == "reply" and answer.thread == "2.0" and answer.buttons
    assert "faq.csv" not in answer.text and "help.example.com/password" in answer.text
    # a person of the support group answers while Confab is still thinking: Confab drops its own
    task = asyncio.create_task(desk.on_message(msg("How can I get a refund?", "3.0")))
    await asyncio.sleep(0)
    assert await desk.on_message(msg("Let me check that for you", "3.1", user="UAGENT", thread="3.0")) is None
    assert await asyncio.wait_for(task, 120) is None
    # a customer's follow-up in a thread is for people
    assert await desk.on_message(msg("still stuck, how do I do it?", "2.5", thread="2.0")) is None
    # feedback: helpful is recorded; not helpful pings the group
    assert await desk.feedback("slack", "CSUP", "2.0", answer.outcome_id, True) is None
    ping = await desk.feedback("slack", "CSUP", "2.0", answer.outcome_id, False)
    assert ping.kind == "ping" and ping.text.startswith("<!subteam^S0HELP>")
    stats = await desk.answerer.kb.stats()
    assert stats["not_helpful"] == 1 and stats["answers"] >= 1


@needs_kb
async def test_handover_escalates_after_the_timeout_unless_a_person_replied(desk):
    desk, clock = desk
    first = await asyncio.wait_for(desk.on_message(msg("What is the capital of Mongolia?", "5.0")), 120)
    assert first.kind == "reply" and first.decision == "handover" and not first.buttons
    second = await asyncio.wait_for(desk.on_message(msg("Who painted the Mona Lisa?", "6.0")), 120)
    assert second.decision == "handover"
    await desk.on_message(msg("On it!", "6.1", user="UANY", thread="6.0", memberships=("S0HELP",)))
    clock.now += 29 * 60
    assert desk.due_escalations() == []
    clock.now += 2 * 60
    pings = desk.due_escalations()
    assert [(p.thread, p.kind) for p in pings] == [("5.0", "ping")]
    assert pings[0].text.startswith("<!subteam^S0HELP>") and "31 min" in pings[0].text
    assert desk.due_escalations() == []             # once only
    # the Discord channel is configured silent: an unsure question gets nothing at all
    assert await asyncio.wait_for(desk.on_message(
        msg("What is the capital of Mongolia?", "900", channel="42", platform="discord")), 120) is None
    quoted = await asyncio.wait_for(desk.on_message(
        msg("How long does delivery take?", "901", channel="42", platform="discord")), 120)
    assert quoted.decision == "answer" and "three to five business days" in quoted.text
