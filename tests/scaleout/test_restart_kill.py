"""Restart without loss, for real: a `confab run` process answering the loopback Slack over
Socket Mode is killed with SIGKILL while its jobs are queued and running, then started again on
the same data folder. Every acknowledged mention gets one answer, in one message, none twice.

Also, in-process: a job whose answer message was already posted before the kill has that
message edited on resume, never a second one posted.
"""
from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import pytest
import pytest_asyncio

from tests.confab_process import clean_env, open_events, reply_refs, start_confab, statuses, terminate
from tests.confab_process import kill as stop
from tests.conftest import free_port, requires_chat_model
from tests.engine.test_kb import needs_kb, write_docs

pytest.importorskip("slack_bolt")
from tests.fakes.slack import SlackFake  # noqa: E402

pytestmark = requires_chat_model

N = 4
# Confab runs in its own process here, so its clock is out of reach: these tests bound the wire
# against a hang only. Slack's 3 s rule is checked on Confab's own clock in tests/bots/slack/.
WIRE_S = 30.0


@pytest_asyncio.fixture
async def fake():
    f = SlackFake(ack_deadline=WIRE_S)
    await f.start()
    try:
        yield f
    finally:
        await f.stop()


def confab_env(fake: SlackFake, data_dir: Path, models_dir: Path) -> dict:
    return clean_env(CONFAB_DATA_DIR=str(data_dir), CONFAB_MODELS_DIR=str(models_dir),
                     CONFAB_PORT=str(free_port()), CONFAB_MAX_TOKENS="24", CONFAB_THREADS="1",
                     CONFAB_SLACK_USER_RATE="0", CONFAB_SLACK_EDIT_INTERVAL="0.3",
                     SLACK_BOT_TOKEN=fake.bot_token, SLACK_APP_TOKEN=fake.app_token,
                     CONFAB_SLACK_API_URL=fake.api_url)


async def settled(engine, running, job_id: str, timeout: float = 30) -> None:
    """Evidence that a job's answer is complete on Slack, instead of a pause: its reply record
    says the final edit went out, and the adapter has nothing in flight."""
    async def over():
        while True:
            record = await engine.store.get_job(job_id)
            if (json.loads(record["reply_ref"] or "{}").get("delivered")
                    and not running.adapter._tasks):
                return
            await asyncio.sleep(0.05)
    await asyncio.wait_for(over(), timeout)


async def idle_then_close(engine) -> None:
    """Cancel what still runs and wait for it: a model is never unloaded under a running job."""
    for handle in engine.active_jobs():
        await handle.cancel()

    async def idle():
        while engine.active_jobs() or engine.scheduler.running:
            await asyncio.sleep(0.05)
    try:
        await asyncio.wait_for(idle(), 30)
    finally:
        await engine.close()


async def wait_delivered(data: Path, timeout: float = 30) -> None:
    """Until every job's reply record says its final text reached Slack."""
    async def delivered():
        while not all(json.loads(r or "{}").get("delivered") for r in reply_refs(data)):
            await asyncio.sleep(0.1)
    await asyncio.wait_for(delivered(), timeout)


def is_final(fake: SlackFake, m: dict) -> bool:
    text = m.get("text", "")
    return (m.get("bot_id") == fake.bot_id and "▌" not in text and not m.get("blocks")
            and not text.startswith(("⏳", "✍️", "…")))


async def test_sigkill_while_jobs_queue_then_restart_answers_each_mention_once(fake, tmp_path,
                                                                                 shared_models_dir):
    data = tmp_path / "data"
    env = confab_env(fake, data, shared_models_dir)
    log = tmp_path / "confab.log"
    first = start_confab(env, tmp_path, log)
    second = None
    threads = []
    try:
        await fake.wait_connected(1, timeout=60)
        for i in range(N):
            mention, message = fake.mention_pair(f"<@{fake.bot_user_id}> Tell me a long story "
                                                 f"about the number {i}.")
            for event in (message, mention):
                eid = await fake.send_event(event)
                await fake.wait_ack(eid, WIRE_S)
            threads.append(mention["ts"])
        # every job is in the store with where it answers (its placeholder is up), and not all done
        await fake.wait_until(lambda: all(fake.bot_messages("C1", ts) for ts in threads), 60,
                              "a placeholder in every thread")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        before = statuses(data)
        assert len(before) == N
        unfinished = [j for j, s in before.items() if s in ("queued", "running")]
        assert unfinished, f"every job finished before the kill: {before}"

        second = start_confab(env, tmp_path, log)
        await fake.wait_connected(2, timeout=60)

        def answered():
            return all(len(fake.bot_messages("C1", ts)) == 1 and is_final(fake, fake.bot_messages("C1", ts)[0])
                       for ts in threads)
        await fake.wait_until(answered, 90, f"{N} final answers")
        await fake.wait_until(lambda: set(statuses(data).values()) == {"done"}, 30, "every job done")
        # each answer's record says its final text went out (the last call for it), and no kept
        # event is open: nothing is left that could post, so the counts below are final
        await wait_delivered(data)
        assert open_events(data) == []
        for ts in threads:
            msgs = fake.bot_messages("C1", ts)
            assert len(msgs) == 1, (ts, msgs)
            assert msgs[0]["text"].strip()
        posts = [c for c in fake.calls_to("chat.postMessage") if c.ok]
        assert len(posts) == N, [c.params for c in posts]
        # the fake's echoes of the bot's own messages sent while no Confab ran are redelivered;
        # that is the kill, not a slow ack. Anything else the fake noticed is a bug.
        problems = [p for p in fake.problems if "not acknowledged" not in p or not p.startswith("events_api")]
        assert not problems, problems
    except BaseException:
        sys.stderr.write(log.read_text(errors="replace")[-6000:])
        sys.stderr.write(f"\nstore: {statuses(data)}\n")
        for ts in threads:
            sys.stderr.write(f"thread {ts}: {fake.bot_messages('C1', ts)}\n")
        raise
    finally:
        stop(first)
        if second is not None:
            terminate(second)


async def test_sigkill_after_the_acks_but_before_any_job_then_restart_answers_each_once(
        fake, tmp_path, shared_models_dir):
    """The kill lands after Slack heard "got it" and before a job was made: every question was
    kept before its ack, so the restart answers it with no new event. Handling waits on
    users.info (the admin check before a job is made) because the fake holds that call."""
    data = tmp_path / "data"
    env = confab_env(fake, data, shared_models_dir)
    log = tmp_path / "confab.log"
    fake.hold("users.info")
    first = start_confab(env, tmp_path, log)
    second = None
    threads = []
    try:
        await fake.wait_connected(1, timeout=60)
        for i in range(N - 1):
            mention, message = fake.mention_pair(f"<@{fake.bot_user_id}> What is {i} plus {i}?")
            for event in (mention, message):      # the twin: one question, answered once
                await fake.wait_ack(await fake.send_event(event), WIRE_S)
            threads.append(mention["ts"])
        await fake.wait_ack(await fake.send_slash_command("/ask", "What colour is grass?"), WIRE_S)
        await fake.wait_until(lambda: len(fake.calls_to("users.info")) >= N, 30,
                              "every question stuck before its job")
        assert len(open_events(data)) == N
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert statuses(data) == {}, "a job was made before the kill; this test wants none"
        assert not fake.bot_messages("C1")
        fake.release("users.info")

        second = start_confab(env, tmp_path, log)
        await fake.wait_connected(2, timeout=60)

        def asked():
            return [m for m in fake.bot_messages("C1") if "asked:" in m.get("text", "")]

        def answered():
            parents = asked()
            return (all(len(fake.bot_messages("C1", ts)) == 1 and is_final(fake, fake.bot_messages("C1", ts)[0])
                        for ts in threads)
                    and len(parents) == 1 and len(fake.bot_messages("C1", parents[0]["ts"])) == 2
                    and is_final(fake, fake.bot_messages("C1", parents[0]["ts"])[1]))
        await fake.wait_until(answered, 120, f"{N} answers after the restart")
        await fake.wait_until(lambda: set(statuses(data).values()) == {"done"} and len(statuses(data)) == N,
                              30, f"{N} jobs done")
        assert open_events(data) == []
        await wait_delivered(data)      # the last call of each answer made: the counts are final
        assert answered() and len(asked()) == 1
        posts = [c for c in fake.calls_to("chat.postMessage") if c.ok]
        assert len(posts) == N + 1, [c.params.get("text") for c in posts]   # N answers and one "asked:"
    except BaseException:
        sys.stderr.write(log.read_text(errors="replace")[-6000:])
        sys.stderr.write(f"\nstore: {statuses(data)}, open events: {open_events(data)}\n")
        raise
    finally:
        fake.release("users.info")
        stop(first)
        if second is not None:
            terminate(second)


async def test_an_answer_posted_before_the_kill_is_edited_not_posted_again(fake, tmp_path,
                                                                          shared_models_dir):
    """The kill landed after the answer's message reached Slack but before the job was done."""
    import bots.slack
    from bots.common.commands import Commands
    from engine import ChatJob, ChatMessage, Engine, Origin
    from tests.conftest import make_settings, slack_settings

    settings = make_settings(tmp_path, shared_models_dir, max_tokens=8, threads=1)
    door = slack_settings(slack_bot_token=fake.bot_token, slack_app_token=fake.app_token, slack_api_url=fake.api_url)
    mention = fake.app_mention_event(f"<@{fake.bot_user_id}> What is 2 and 2?")
    thread = mention["ts"]
    # before the kill: the job was accepted and its answer message posted (a half answer)
    first = Engine(settings)
    job = ChatJob(origin=Origin(platform="slack", user="U1", channel="C1", thread=thread),
                  messages=[ChatMessage("user", "What is 2 and 2?")], temperature=0.0)
    await first.submit(job)
    from slack_sdk.web.async_client import AsyncWebClient
    client = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)
    posted = await client.chat_postMessage(channel="C1", thread_ts=thread, text="Two and two ma ▌")
    await first.store.set_reply_ref(job.id, json.dumps({"channel": "C1", "thread_ts": thread, "user": "U1",
                                                        "messages": [posted["ts"]]}))
    await first.close()

    engine = Engine(settings)
    running = await bots.slack.start(engine, Commands(engine), None, door)
    try:
        await engine.start()
        async def answered():
            while not (engine.handle(job.id) and engine.handle(job.id).done
                       and is_final(fake, fake.bot_messages("C1", thread)[0])):
                await asyncio.sleep(0.1)
        try:
            await asyncio.wait_for(answered(), 90)
        except asyncio.TimeoutError:
            raise AssertionError(f"no resumed answer: {fake.bot_messages('C1', thread)}, "
                                 f"{await engine.store.get_job(job.id)}") from None
        await settled(engine, running, job.id)
        msgs = fake.bot_messages("C1", thread)
        assert [m["ts"] for m in msgs] == [posted["ts"]]
        assert "▌" not in msgs[0]["text"]
        record = await engine.store.get_job(job.id)
        assert record["status"] == "done"
        assert json.loads(record["reply_ref"])["messages"] == [posted["ts"]]
    finally:
        await asyncio.wait_for(running.stop(), 15)
        await idle_then_close(engine)


async def test_an_answer_marked_done_before_its_last_edit_gets_that_edit_after_a_restart(
        fake, tmp_path, shared_models_dir):
    """The kill landed after the store said done but before the final edit reached Slack."""
    from slack_sdk.web.async_client import AsyncWebClient

    import bots.slack
    from bots.common.commands import Commands
    from engine import ChatJob, ChatMessage, Engine, Origin
    from tests.conftest import make_settings, slack_settings

    settings = make_settings(tmp_path, shared_models_dir)
    door = slack_settings(slack_bot_token=fake.bot_token, slack_app_token=fake.app_token, slack_api_url=fake.api_url)
    mention = fake.app_mention_event(f"<@{fake.bot_user_id}> What is 2 and 2?")
    thread = mention["ts"]
    first = Engine(settings)
    job = ChatJob(origin=Origin(platform="slack", user="U1", channel="C1", thread=thread),
                  messages=[ChatMessage("user", "What is 2 and 2?")])
    await first.submit(job)
    client = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)
    posted = await client.chat_postMessage(channel="C1", thread_ts=thread, text="Two and two ma ▌")
    await first.store.set_reply_ref(job.id, json.dumps({"channel": "C1", "thread_ts": thread, "user": "U1",
                                                        "messages": [posted["ts"]]}))
    await first.store.set_status(job.id, "done", result={
        "text": "Two and two make four.", "finish_reason": "stop", "model": job.model,
        "usage": {"prompt_tokens": 9, "completion_tokens": 6}, "trimmed_messages": 0})
    await first.close()

    engine = Engine(settings)
    running = await bots.slack.start(engine, Commands(engine), None, door)
    try:
        await engine.start()

        async def edited():
            while fake.bot_messages("C1", thread)[0]["text"] != "Two and two make four.":
                await asyncio.sleep(0.05)
        await asyncio.wait_for(edited(), 30)
        await settled(engine, running, job.id)
        assert [m["ts"] for m in fake.bot_messages("C1", thread)] == [posted["ts"]]
        assert await engine.store.undelivered_jobs(0) == []     # the next restart leaves it alone
    finally:
        await asyncio.wait_for(running.stop(), 15)
        await idle_then_close(engine)


SUPPORT_CHANNELS = {
    "support_groups": {"helpdesk": {"members": ["slack:UAGENT"]}},
    "support_channels": [{"platform": "slack", "channel": "CSUP", "group": "helpdesk",
                          "answer_mode": "excerpt"}],
}


@needs_kb
async def test_sigkill_after_support_questions_were_acknowledged_then_restart_answers_each_once(
        fake, tmp_path, shared_models_dir):
    """A support channel's questions are kept before their ack too. The kill lands while the
    desk's answers wait on chat.postMessage (the fake holds it; the held posts then fail, as if
    they never reached Slack). After the restart the first question is answered, once; the
    second is not, as a person of the support group replied in its thread meanwhile; the third
    is not answered again, as its answer had reached Slack (posted here: the kill came after)."""
    from slack_sdk.web.async_client import AsyncWebClient

    data = tmp_path / "data"
    channels = tmp_path / "channels.json"
    channels.write_text(json.dumps(SUPPORT_CHANNELS))
    env = dict(confab_env(fake, data, shared_models_dir), CONFAB_CHANNELS_FILE=str(channels))
    kb = await asyncio.create_subprocess_exec(sys.executable, "-m", "bots.cli", "kb", "add",
                                              str(write_docs(tmp_path / "docs")), env=env, cwd=tmp_path)
    assert await asyncio.wait_for(kb.wait(), 300) == 0
    fake.add_user("UAGENT", "agent")
    fake.add_channel("CSUP", "support", members=["U2", "UAGENT", fake.bot_user_id])
    log = tmp_path / "confab.log"
    fake.hold("chat.postMessage")
    first = start_confab(env, tmp_path, log)
    second = None
    try:
        await fake.wait_connected(1, timeout=60)
        answered, person, posted = questions = [
            fake.message_event(text, channel="CSUP", user="U2")
            for text in ("How do I reset my password?", "How long does delivery take?",
                         "How can I get a refund?")]
        for question in questions:
            await fake.wait_ack(await fake.send_event(question), WIRE_S)
        await fake.wait_until(lambda: len(fake.calls_to("chat.postMessage")) >= 3, 120,
                              "the desk's three answers held")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert len(open_events(data)) == 3
        fake.fail_next("chat.postMessage", "fatal_error", times=3)
        fake.release("chat.postMessage")
        await fake.wait_until(lambda: all(c.response for c in fake.calls_to("chat.postMessage")), 10,
                              "the held posts refused")
        assert not fake.bot_messages("CSUP")
        # while no Confab ran: a support person answered one question, and another's answer
        # reached Slack just before the kill
        fake.message_event("Three to five business days.", channel="CSUP", user="UAGENT",
                           thread_ts=person["ts"])
        client = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)
        earlier = await client.chat_postMessage(channel="CSUP", thread_ts=posted["ts"],
                                                text="Refunds take five days.")

        second = start_confab(env, tmp_path, log)
        await fake.wait_connected(2, timeout=60)
        await fake.wait_until(lambda: fake.bot_messages("CSUP", answered["ts"]), 120, "the answer")
        # the desk settles a kept question after its work for it (posting included) is over:
        # once none is open, nothing more comes of them
        await fake.wait_until(lambda: not open_events(data), 60, "every kept question settled")
        reply, = fake.bot_messages("CSUP", answered["ts"])
        assert "help.example.com/password" in reply["text"]
        assert fake.bot_messages("CSUP", person["ts"]) == []
        assert [m["ts"] for m in fake.bot_messages("CSUP", posted["ts"])] == [earlier["ts"]]
        assert len(fake.bot_messages("CSUP")) == 2          # nothing anywhere else
    except BaseException:
        sys.stderr.write(log.read_text(errors="replace")[-6000:])
        sys.stderr.write(f"\nopen events: {open_events(data)}\n")
        raise
    finally:
        fake.release("chat.postMessage")
        stop(first)
        if second is not None:
            terminate(second)
