"""Support channels on Discord end to end: a question answered in a thread started from it, with
citations and Helpful / Not helpful buttons; out-of-scope questions handed over or left alone;
stand-down once a member with the support role has written in the thread; escalation pinging
the role after the timeout (the desk's clock is the test's). The real discord.py client runs
against the strict loopback fake; the knowledge base is embedded with the offline MiniLM model.
Answers quote their passage (answer_mode "excerpt"): grounded generation is tested in
tests/engine/test_kb.py, the desk's rules in tests/bots/test_support_desk.py."""
from __future__ import annotations

import asyncio
import sqlite3

import pytest
import pytest_asyncio

from bots.common.channels import parse_channels
from bots.common.support import SupportDesk
from tests.bots.discord.rig import T, running_rig
from tests.conftest import requires_chat_model
from tests.engine.test_kb import needs_kb, write_docs
from tests.fakes.discord.protocol import MessageFlags

pytestmark = [requires_chat_model, needs_kb, pytest.mark.asyncio(loop_scope="module"),
              pytest.mark.timeout(240)]

TICK_S = 0.1       # how often the adapter looks for due escalations here


class Clock:
    def __init__(self):
        self.now = 1_000_000.0
        self.reads = 0

    def __call__(self):
        self.reads += 1
        return self.now


async def ticks(clock: Clock, n: int) -> None:
    """Until the adapter's escalation loop has looked `n` more times: each look reads the desk's
    clock once, and nothing else reads it while no message is being handled. A look's pings are
    posted before the loop sleeps again, so after n looks the first n - 1 have posted theirs."""
    start = clock.reads

    async def looked():
        while clock.reads < start + n:
            await asyncio.sleep(TICK_S / 4)
    await asyncio.wait_for(looked(), T)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def rig(tmp_path_factory, shared_models_dir):
    from engine.kb import SupportDeskAnswerer, open_kb
    root = tmp_path_factory.mktemp("discord-support")
    kbs = []

    async def make_desk(engine, fake):
        role = fake.add_role("Support", mentionable=True)
        fake.agent = fake.add_user("agent", global_name="Agent", roles=[role])
        fake.role_id = role
        fake.quiet_channel_id = fake.add_text_channel("support-quiet")["id"]
        channels = parse_channels({
            "support_groups": {"helpdesk": {"discord_role": role}},
            "support_channels": [
                {"platform": "discord", "channel": fake.support_channel_id, "group": "helpdesk",
                 "answer_mode": "excerpt", "escalate_minutes": 30},
                {"platform": "discord", "channel": fake.quiet_channel_id, "group": "helpdesk",
                 "answer_mode": "excerpt", "when_unsure": "silent"}]})
        kb = open_kb(engine)
        kbs.append(kb)
        await asyncio.wait_for(kb.add([write_docs(root / "docs")]), 180)
        return SupportDesk(engine, SupportDeskAnswerer(engine, kb), channels, Clock())

    try:
        async with running_rig(root / "data", shared_models_dir, desk=make_desk, escalate_every_s=TICK_S) as rig:
            rig.desk, rig.kb = rig.adapter.desk, kbs[0]
            yield rig
    finally:
        for kb in kbs:
            kb.close()


async def ask(rig, text: str, *, channel: str | None = None, author: dict | None = None) -> dict:
    payload = rig.fake.message_create_guild(text, channel_id=channel or rig.fake.support_channel_id,
                                            author=author)
    await rig.fake.dispatch("MESSAGE_CREATE", payload)
    return payload


def thread_posts(rig, thread_id: str) -> list[dict]:
    """What the bot posted in a thread (the thread's id is the question's)."""
    return [m for m in rig.fake.sent_by_bot(thread_id) if not m["flags"] & MessageFlags.EPHEMERAL]


async def answer_in_thread(rig, question: dict) -> dict:
    """The bot's first message in the thread it started from `question`."""
    fake, qid = rig.fake, question["id"]
    start = await fake.wait_for("POST", f"/channels/{question['channel_id']}/messages/{qid}/threads", timeout=T)
    assert start.status == 200, start.response
    sent = await fake.wait_for("POST", f"/channels/{qid}/messages", lambda r: r.status == 200, timeout=T)
    return sent.response


async def decided(rig, key: str, before: dict) -> dict:
    """The knowledge base's counts once one more `key` (answers, handovers, silent) is logged."""
    async def more():
        while True:
            stats = await rig.kb.stats()
            if stats[key] > before[key]:
                return stats
            await asyncio.sleep(0.05)
    return await asyncio.wait_for(more(), T)


def settled(rig, message_id: str) -> bool:
    """Whether the desk has done with a question it kept (engine/storage/intake.py)."""
    db = sqlite3.connect(rig.engine.settings.data_path / "confab.db")
    try:
        return db.execute("SELECT status FROM events WHERE id=?",
                          (f"discord:message:{message_id}",)).fetchall() == [("closed",)]
    finally:
        db.close()


def buttons(message: dict) -> list[str]:
    return [c["custom_id"] for row in message.get("components", []) for c in row.get("components", [])]


async def test_a_question_is_answered_in_a_thread_with_its_source_cited(rig):
    fake = rig.fake
    before = await rig.kb.stats()
    greeting = await ask(rig, "hi all 👋")
    question = await ask(rig, "How do I reset my password?")
    answer = await answer_in_thread(rig, question)
    assert answer["channel_id"] == question["id"]                     # inside the thread
    assert "help.example.com/password" in answer["content"] and "Sources:" in answer["content"]
    assert answer["flags"] & MessageFlags.SUPPRESS_EMBEDS and answer["mention_roles"] == []
    support = fake.support_channel_id
    assert [b.split(":")[2] for b in buttons(answer)] == ["yes", "no"]
    assert all(b.endswith(f":{support}") for b in buttons(answer))
    thread = fake.channels[question["id"]]
    assert thread["type"] == 11 and thread["parent_id"] == support and thread["owner_id"] == fake.bot_user_id
    assert 1 <= len(thread["name"]) <= 100 and "reset my password" in thread["name"]
    created = [p for p in fake.gateway_sent if p.get("t") == "THREAD_CREATE"]
    assert any(p["d"]["id"] == question["id"] and p["d"]["newly_created"] for p in created)
    # nothing in the channel itself, nothing for the greeting
    assert fake.sent_by_bot(support) == [] and greeting["id"] not in fake.channels
    assert (await rig.kb.stats())["answers"] == before["answers"] + 1
    embeds = [h for h in rig.jobs("embed") if h.job.origin.channel == support]
    assert embeds and {h.priority for h in embeds} == {1}             # a person waits: class 1


async def test_helpful_is_recorded_and_not_helpful_pings_the_support_role(rig):
    fake = rig.fake
    question = await ask(rig, "How can I get a refund?")
    answer = await answer_in_thread(rig, question)
    helpful, not_helpful = buttons(answer)
    before = await rig.kb.stats()

    press = fake.interaction_button(helpful, answer)
    await fake.dispatch("INTERACTION_CREATE", press)
    ack = await rig.acked(press)
    assert ack.status == 200 and ack.json["type"] == 5 and ack.json["data"]["flags"] == MessageFlags.EPHEMERAL
    thanks = await fake.wait_for("POST", f"/webhooks/{fake.application_id}/{press['token']}", timeout=T)
    assert "Thanks" in thanks.response["content"] and thanks.response["flags"] & MessageFlags.EPHEMERAL
    assert (await rig.kb.stats())["helpful"] == before["helpful"] + 1

    press = fake.interaction_button(not_helpful, answer, user=fake.other_user)
    await fake.dispatch("INTERACTION_CREATE", press)
    await fake.wait_for("POST", f"/webhooks/{fake.application_id}/{press['token']}", timeout=T)
    ping = await fake.wait_for("POST", f"/channels/{question['id']}/messages",
                               lambda r: r.status == 200 and r.response["content"].startswith("<@&"), timeout=T)
    assert ping.response["content"].startswith(f"<@&{fake.role_id}>") and "did not help" in ping.response["content"]
    assert ping.response["mention_roles"] == [fake.role_id]           # it really pings the role
    mentions = ping.json["allowed_mentions"]
    assert [str(r) for r in mentions["roles"]] == [fake.role_id] and not mentions["parse"]
    assert (await rig.kb.stats())["not_helpful"] == before["not_helpful"] + 1


async def test_out_of_scope_questions_are_handed_over_or_left_alone_as_configured(rig):
    fake = rig.fake
    question = await ask(rig, "What is the capital of Mongolia?")
    handover = await answer_in_thread(rig, question)
    assert "support team" in handover["content"] and not handover["components"]
    before = await rig.kb.stats()
    quiet = await ask(rig, "What is the capital of Mongolia?", channel=fake.quiet_channel_id)
    await decided(rig, "silent", before)
    await rig.until(lambda: not rig.adapter.engine.active_jobs(), "the engine to be idle")
    assert quiet["id"] not in fake.channels                           # no thread, no word
    assert not fake.find("POST", f"/messages/{quiet['id']}/threads") and not fake.sent_by_bot(fake.quiet_channel_id)


async def test_no_answer_in_a_thread_where_a_support_member_replied(rig):
    fake = rig.fake
    question = await ask(rig, "How long does delivery take?")
    # a member with the support role opens the thread and answers while Confab looks it up (or
    # before: the question is kept in the store first, and the reply may reach the desk first)
    await fake.start_thread(fake.messages[question["id"]], by=fake.agent, name="delivery")
    reply = fake.message_create_guild("Three to five business days.", channel_id=question["id"], author=fake.agent)
    await fake.dispatch("MESSAGE_CREATE", reply)
    await rig.until(lambda: settled(rig, question["id"]), "the desk done with the question")
    follow_up = fake.message_create_guild("how do I track it?", channel_id=question["id"])
    await fake.dispatch("MESSAGE_CREATE", follow_up)
    await rig.handled()
    assert thread_posts(rig, question["id"]) == []
    assert not fake.find("POST", f"/messages/{question['id']}/threads")


async def test_a_handover_nobody_answered_pings_the_role_after_the_timeout(rig):
    fake, clock = rig.fake, rig.desk.clock
    waiting = await ask(rig, "Who painted the Mona Lisa?")
    taken = await ask(rig, "What is the capital of Mongolia?")
    for question in (waiting, taken):
        assert "support team" in (await answer_in_thread(rig, question))["content"]     # handed over
    await fake.dispatch("MESSAGE_CREATE", fake.message_create_guild("On it!", channel_id=taken["id"],
                                                                    author=fake.agent))
    # a customer's follow-up in a thread is for people, and does not reset the wait
    await fake.dispatch("MESSAGE_CREATE", fake.message_create_guild("any news?", channel_id=waiting["id"]))
    await rig.handled()
    assert len(thread_posts(rig, waiting["id"])) == 1

    clock.now += 31 * 60
    ping = await fake.wait_for("POST", f"/channels/{waiting['id']}/messages",
                               lambda r: r.status == 200 and "waited 31 min" in r.response["content"], timeout=T)
    assert ping.response["content"].startswith(f"<@&{fake.role_id}>")
    assert ping.response["mention_roles"] == [fake.role_id]
    await rig.handled()
    await ticks(clock, 3)                           # later ticks: once only, and not the taken one
    assert len(thread_posts(rig, waiting["id"])) == 2
    assert len(thread_posts(rig, taken["id"])) == 1
