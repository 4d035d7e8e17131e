"""Support channels on Slack: new top-level questions answered in a thread from the knowledge base
(with citations and feedback buttons), hand-overs, stand-down when a support person replied,
and "not helpful" pinging the group, over Socket Mode and HTTP. The desk's rules themselves are
tested in tests/bots/test_support_desk.py; answers quote passages (answer_mode "excerpt")."""
from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio

from bots.common.channels import parse_channels
from bots.common.support import SupportDesk
from engine import Engine
from tests.bots.slack.conftest import engine_settings, running_confab
from tests.engine.test_kb import needs_kb, write_docs

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(240), needs_kb]

CHANNELS = {
    "support_groups": {"helpdesk": {"slack_usergroup": "S0HELP", "members": ["slack:UAGENT"]}},
    "support_channels": [{"platform": "slack", "channel": "CSUP", "group": "helpdesk",
                          "answer_mode": "excerpt"}],
}


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def desk(tmp_path_factory, shared_models_dir):
    from engine.kb import SupportDeskAnswerer, open_kb
    root = tmp_path_factory.mktemp("slack-support")
    engine = Engine(engine_settings(root / "data", shared_models_dir))
    await engine.start(resume=False)
    kb = open_kb(engine)
    await asyncio.wait_for(kb.add([write_docs(root / "docs")]), 180)
    try:
        yield SupportDesk(engine, SupportDeskAnswerer(engine, kb), parse_channels(CHANNELS), Clock())
    finally:
        kb.close()
        await engine.close()


def _is_mine(fake, thread_ts):
    return lambda m: m.get("bot_id") == fake.bot_id and m.get("thread_ts") == thread_ts


async def test_support_channel_answers_questions_in_threads(fake, mode, desk):
    fake.add_user("UAGENT", "agent", real_name="Agent Example")
    fake.add_channel("CSUP", "support", members=["U1", "U2", "UAGENT", fake.bot_user_id])
    async with running_confab(fake, mode, desk.engine, desk=desk) as confab:
        chatter = fake.message_event("hi all", channel="CSUP", user="U2")
        await confab.deliver(chatter)
        question = fake.message_event("How do I reset my password?", channel="CSUP", user="U2")
        await confab.deliver(question)
        answer = await fake.wait_message("CSUP", _is_mine(fake, question["ts"]), thread_ts=question["ts"],
                                         timeout=120)
        assert "help.example.com/password" in answer["text"]          # the citation
        buttons = [el["action_id"] for el in answer["blocks"][1]["elements"]]
        assert buttons == ["confab_helpful", "confab_not_helpful"]
        # a customer's follow-up in the thread is for people; so is a new question a person
        # of the support group already took on
        followup = fake.message_event("still stuck, how do I do it?", channel="CSUP", user="U2",
                                      thread_ts=question["ts"])
        await confab.deliver(followup)
        # "not helpful" pings the support group in the thread
        await confab.click("confab_not_helpful", answer["blocks"][1]["elements"][1]["value"], user="U2",
                           channel="CSUP", message_ts=answer["ts"])
        ping = await fake.wait_message("CSUP", lambda m: _is_mine(fake, question["ts"])(m)
                                       and m["text"].startswith("<!subteam^S0HELP>"),
                                       thread_ts=question["ts"], timeout=30)
        assert "did not help" in ping["text"]
        await fake.wait_until(lambda: [p for p in fake.response_url_posts
                                       if "support team" in p["json"].get("text", "")], 10, "the thanks")
        # a question nobody documented is handed over, without buttons
        unknown = fake.message_event("What is the capital of Mongolia?", channel="CSUP", user="U2")
        await confab.deliver(unknown)
        handover = await fake.wait_message("CSUP", _is_mine(fake, unknown["ts"]), thread_ts=unknown["ts"],
                                           timeout=120)
        assert not handover.get("blocks")
        # a person of the support group takes on another one; only the first is escalated later
        taken = fake.message_event("Who painted the Mona Lisa?", channel="CSUP", user="U2")
        await confab.deliver(taken)
        await fake.wait_message("CSUP", _is_mine(fake, taken["ts"]), thread_ts=taken["ts"], timeout=120)
        await confab.deliver(fake.message_event("On it!", channel="CSUP", user="UAGENT", thread_ts=taken["ts"]))
        await confab.idle()
        desk.clock.now += 31 * 60
        for ping in desk.due_escalations():      # what the adapter's escalation task posts
            await confab.adapter.support.post(ping)
        late = await fake.wait_message("CSUP", lambda m: _is_mine(fake, unknown["ts"])(m)
                                       and "waited 31 min" in m["text"], thread_ts=unknown["ts"], timeout=10)
        assert late["text"].startswith("<!subteam^S0HELP>")
        assert len(fake.bot_messages("CSUP", taken["ts"])) == 1    # the hand-over only
        # evidence that nothing more comes, rather than a pause: the chatter and the follow-up
        # were not kept as questions before their acks, the question's work is settled, and the
        # desk's tasks for every message (spawned before each ack went back) are done
        assert confab.kept(f"slack:CSUP:{chatter['ts']}") is None
        assert confab.kept(f"slack:CSUP:{followup['ts']}") is None
        assert confab.kept(f"slack:CSUP:{question['ts']}")[0] == "closed"
        await confab.idle()
        assert not fake.bot_messages("CSUP", chatter["ts"])
        mine = fake.bot_messages("CSUP", question["ts"])
        assert len(mine) == 2            # the answer and the ping, nothing for the follow-up
        assert [s for s in (await desk.answerer.kb.stats(),) if s["not_helpful"] >= 1]
    assert not fake.problems, fake.problems


async def test_a_member_of_the_support_user_group_takes_a_thread_over(fake, mode, desk):
    """A person in the group's Slack user group (not listed by id) replying in a handed-over
    thread makes Confab stand down there: no escalation ping later."""
    fake.add_user("UGRP", "grace", real_name="Grace Example")
    fake.add_usergroup("S0HELP", ["UGRP"])
    fake.add_channel("CSUP", "support", members=["U2", "UGRP", fake.bot_user_id])
    async with running_confab(fake, mode, desk.engine, desk=desk) as confab:
        unknown = fake.message_event("What is the capital of Mongolia?", channel="CSUP", user="U2")
        await confab.deliver(unknown)
        handover = await fake.wait_message("CSUP", _is_mine(fake, unknown["ts"]), thread_ts=unknown["ts"],
                                           timeout=120)
        assert not handover.get("blocks")
        await confab.deliver(fake.message_event("Let me check that for you.", channel="CSUP", user="UGRP",
                                                thread_ts=unknown["ts"]))
        await confab.idle()
        assert fake.calls_to("usergroups.users.list")
        desk.clock.now += 31 * 60
        assert not [p for p in desk.due_escalations() if p.thread == unknown["ts"]]
    assert not fake.problems, fake.problems
