"""Nothing lost: a mention accepted before a restart is answered after it, in the placeholder
posted for it then (never a second answer). The first Confab's model never loads (its loader
waits on a gate), so the job is still queued when it stops; the second runs the real SmolLM2.
Then for real: a `confab run` process killed with SIGKILL mid-work, and started again."""
from __future__ import annotations

import asyncio
import sys
import threading

import pytest

from bots.common.commands import Commands
from bots.discord.adapter import DiscordAdapter
from engine.runtime.engine import Engine
from tests.conftest import discord_settings, make_settings, requires_chat_model
from tests.engine.test_kb import needs_kb
from tests.fakes.discord import DiscordFake
from tests.speech_helpers import requires_speech_tools

pytestmark = [requires_chat_model, pytest.mark.asyncio, pytest.mark.timeout(300)]
# Confab runs in a process of its own below, its clock out of reach: the fake only refuses a
# first response later than this (a hang). Discord's 3 s is checked on Confab's clock in the rig.
WIRE_S = 30.0


async def test_a_job_accepted_before_a_restart_is_answered_in_its_placeholder(tmp_path, shared_models_dir):
    async with DiscordFake() as fake:
        settings = make_settings(tmp_path, shared_models_dir, max_tokens=24, threads=1, context_tokens=2048)
        door = discord_settings(discord_bot_token=fake.token, discord_api_url=fake.api_base,
                                discord_gateway_url=fake.gateway_url)
        gate = threading.Event()

        def never(name, device):
            gate.wait(60)
            raise RuntimeError("stopped")

        first = Engine(settings, load=never, gpu_total=None)
        await first.start()
        adapter = DiscordAdapter(first, Commands(first), door, guild_ready_timeout=0.1, identify_delay=0.1)
        await adapter.start()
        await fake.wait_for_identify(timeout=10)
        mention = fake.message_create_mention("What is the capital of France?")
        await fake.dispatch("MESSAGE_CREATE", mention)
        placeholder = await fake.wait_for("POST", f"/channels/{fake.channel_id}/messages", timeout=30)
        job_id = next(iter(first._handles))

        async def recorded():              # the reply record names the placeholder, saved after the post
            while placeholder.response["id"] not in ((await first.store.get_job(job_id))["reply_ref"] or ""):
                await asyncio.sleep(0.05)
        await asyncio.wait_for(recorded(), 30)
        await adapter.stop()
        gate.set()
        await first.close()

        second = Engine(settings, gpu_total=None)
        await second.start()
        again = DiscordAdapter(second, Commands(second), door, guild_ready_timeout=0.1, identify_delay=0.1)
        await again.start()
        try:
            mid = placeholder.response["id"]

            async def answered():
                while "confab:speak" not in str(fake.messages[mid]["components"]) and not (
                        second.handle(job_id) and second.handle(job_id).status == "failed"):
                    await asyncio.sleep(0.1)
            await asyncio.wait_for(answered(), 200)
            assert (await second.handle(job_id).result()).text.strip() == fake.messages[mid]["content"]
            replies = [m for m in fake.sent_by_bot(fake.channel_id)
                       if (m.get("message_reference") or {}).get("message_id") == mention["id"]]
            assert [m["id"] for m in replies] == [mid]
        finally:
            await again.stop()
            await second.close()


# -- for real: a `confab run` process, SIGKILL, and a restart on the same data folder ----------

def discord_env(fake: DiscordFake, data, models) -> dict:
    from tests.confab_process import clean_env
    from tests.conftest import free_port
    return clean_env(CONFAB_DATA_DIR=str(data), CONFAB_MODELS_DIR=str(models), CONFAB_PORT=str(free_port()),
                     CONFAB_MAX_TOKENS="24", CONFAB_THREADS="1", CONFAB_DISCORD_USER_RATE="0",
                     CONFAB_DISCORD_EDIT_INTERVAL="0.3", CONFAB_STT_MODEL="whisper-tiny.en",
                     DISCORD_BOT_TOKEN=fake.token, CONFAB_DISCORD_API_URL=fake.api_base,
                     CONFAB_DISCORD_GATEWAY_URL=fake.gateway_url)


@requires_speech_tools
async def test_sigkill_mid_work_then_restart_answers_each_request_once(tmp_path, shared_models_dir):
    """Three requests caught at three points when the kill lands, each held there by the fake:
    a mention in a thread while its history is read (no job yet), a deferred /transcribe while
    its file downloads (no job yet), and a deferred /ask whose answer is posted but whose next
    edit hangs (the job stored, maybe done). After the restart each gets one answer, in its
    thread or in its interaction's message, and nothing is posted twice."""
    import json
    import signal

    from tests.confab_process import kill, open_events, results, start_confab, statuses, terminate
    from tests.speech_helpers import espeak

    data, log = tmp_path / "data", tmp_path / "confab.log"
    async with DiscordFake(interaction_ack_deadline=WIRE_S) as fake:
        env = discord_env(fake, data, shared_models_dir)
        first = start_confab(env, tmp_path, log)
        second = None
        try:
            await fake.wait_for_identify(timeout=60)
            await fake.wait_for("PUT", "/commands", timeout=30)
            opening = fake.message_create_guild("Let's talk about France here.")
            thread = await fake.start_thread(fake.messages[opening["id"]])
            mention = fake.message_create_mention("What is the capital of France?", channel_id=thread["id"])
            fake.hold(f"/api/v10/channels/{thread['id']}/messages")
            clip = fake.add_attachment(espeak("The meeting starts at nine.", tmp_path / "q.wav").read_bytes(),
                                       "question.wav", "audio/wav")
            fake.hold(f"/attachments/{fake.channel_id}/{clip['id']}/")
            transcribe = fake.interaction_command("transcribe", {"file": clip})
            ask = fake.interaction_command("ask", {"question": "Name three colours."})
            fake.hold(f"/api/v10/webhooks/{fake.application_id}/{ask['token']}/messages/", method="PATCH")

            await fake.dispatch("MESSAGE_CREATE", mention)
            await fake.dispatch("INTERACTION_CREATE", transcribe)
            await fake.dispatch("INTERACTION_CREATE", ask)
            await fake._wait_until(lambda: len(fake.held) >= 3, 90, "all three requests held")
            # they came while the client waited for its servers: once ready, it must not take
            # them for requests of an earlier run and answer them a second time (its replay says
            # how many it took up: none)
            async def replayed():
                while "before the restart" not in log.read_text(errors="replace"):
                    await asyncio.sleep(0.1)
            await asyncio.wait_for(replayed(), 30)
            assert "Discord: answering 0 requests received before the restart" in log.read_text(errors="replace")
            assert len(fake.held) == 3, fake.held
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            assert len(open_events(data)) == 2           # the mention and /transcribe: no job yet
            ask_job, = statuses(data)                     # /ask: its job stored, its answer posted
            assert fake.interaction_state(ask).original_message_id
            fake.release_all()

            second = start_confab(env, tmp_path, log)
            await fake.wait_for_identify(2, timeout=60)

            def parts() -> dict:
                in_thread = fake.sent_by_bot(thread["id"])
                t_msg = fake.messages.get(fake.interaction_state(transcribe).original_message_id or "", {})
                a_msg = fake.messages.get(fake.interaction_state(ask).original_message_id, {})
                result = json.loads(results(data).get(ask_job) or "null")
                return {"mention": len(in_thread) == 1 and "confab:speak" in str(in_thread[0].get("components")),
                        "transcribe": t_msg.get("content", "").startswith("📝"),
                        "ask": bool(result) and a_msg.get("content") == result["text"].strip(),
                        "seen": ([(m.get("content"), m.get("components")) for m in in_thread],
                                 t_msg.get("content"), a_msg.get("content"), result and result["text"])}

            def answered() -> bool:
                return all(ok for part, ok in parts().items() if part != "seen")
            try:
                await fake._wait_until(answered, 240, "three answers after the restart")
            except Exception as timeout:     # which part is missing, in the summary line CI keeps
                raise AssertionError(f"answers after the restart: {parts()}") from timeout
            await fake._wait_until(lambda: set(statuses(data).values()) == {"done"}, 30, "every job done")
            # every job done, every kept request closed, and each answer's last edit seen: nothing
            # is left that could post, so what is there now is final
            assert open_events(data) == []
            assert answered()
            reply, = fake.sent_by_bot(thread["id"])
            assert reply["message_reference"]["message_id"] == mention["id"]
            assert reply["content"].strip()
            assert "meeting" in fake.messages[fake.interaction_state(transcribe).original_message_id]["content"].lower()
            for payload in (transcribe, ask):           # each answer in its interaction's one message
                state = fake.interaction_state(payload)
                assert state.message_ids == [state.original_message_id], [
                    fake.messages[m]["content"] for m in state.message_ids]
            assert all(m.get("interaction_metadata") for m in fake.sent_by_bot(fake.channel_id))
        except BaseException:
            sys.stderr.write(log.read_text(errors="replace")[-8000:])
            sys.stderr.write(f"\nstore: {statuses(data)}, open events: {open_events(data)}\n")
            raise
        finally:
            kill(first)
            if second is not None:
                terminate(second)


@needs_kb
async def test_sigkill_after_support_questions_arrived_then_restart_answers_each_once(tmp_path, shared_models_dir):
    """A support channel's questions are kept before anything is done with them. The kill lands
    while the desk's first thread is being started (the fake holds that call, then refuses it:
    it never reached Discord; discord.py sends the others in the channel's bucket after it).
    After the restart the first question is answered in a thread, once; the second is not, as
    a member with the support role replied in its thread meanwhile (the role read from the
    server: a message read over REST carries none); the third is not answered again, as its
    answer had reached Discord (made here: the kill came after it)."""
    import json
    import signal

    from tests.confab_process import kill, open_events, start_confab, terminate
    from tests.engine.test_kb import write_docs

    data, log = tmp_path / "data", tmp_path / "confab.log"
    async with DiscordFake() as fake:
        role = fake.add_role("Support", mentionable=True)
        agent = fake.add_user("agent", global_name="Agent", roles=[role])
        channels = tmp_path / "channels.json"
        channels.write_text(json.dumps({
            "support_groups": {"helpdesk": {"discord_role": role}},
            "support_channels": [{"platform": "discord", "channel": fake.support_channel_id,
                                  "group": "helpdesk", "answer_mode": "excerpt"}]}))
        env = dict(discord_env(fake, data, shared_models_dir), CONFAB_CHANNELS_FILE=str(channels))
        kb = await asyncio.create_subprocess_exec(sys.executable, "-m", "bots.cli", "kb", "add",
                                                  str(write_docs(tmp_path / "docs")), env=env, cwd=tmp_path)
        assert await asyncio.wait_for(kb.wait(), 300) == 0
        support = fake.support_channel_id
        threads = f"/api/v10/channels/{support}/messages/"
        fake.hold(threads, method="POST")
        first = start_confab(env, tmp_path, log)
        second = None
        try:
            await fake.wait_for_identify(timeout=60)
            await fake.wait_for("PUT", "/commands", timeout=30)
            answered, person, posted = questions = [
                fake.message_create_guild(text, channel_id=support)
                for text in ("How do I reset my password?", "How long does delivery take?",
                             "How can I get a refund?")]
            for question in questions:
                await fake.dispatch("MESSAGE_CREATE", question)
            await fake._wait_until(lambda: fake.held and len(open_events(data)) == 3, 120,
                                   "three questions kept and a thread held")
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            assert len(open_events(data)) == 3
            fake.fail_next(threads, 500, method="POST", times=len(fake.held))
            fake.release_all()
            await fake._wait_until(lambda: len(fake.find("POST", threads)) == len(fake.held), 10,
                                   "the held threads refused")
            assert not any(q["id"] in fake.channels for q in questions)
            # while no Confab ran: a support person answered one, and another's answer got out
            await fake.start_thread(fake.messages[person["id"]], by=agent)
            fake.message_create_guild("Three to five business days.", channel_id=person["id"], author=agent)
            await fake.start_thread(fake.messages[posted["id"]], by=fake.bot_user)
            earlier = fake.message_create_guild("Refunds take five days.", channel_id=posted["id"],
                                                author=fake.bot_user)

            second = start_confab(env, tmp_path, log)
            await fake.wait_for_identify(2, timeout=60)
            await fake._wait_until(lambda: fake.sent_by_bot(answered["id"]), 120, "the answer")
            # the desk settles a kept question after its work for it (posting included) is over:
            # once none is open, nothing more comes of them
            await fake._wait_until(lambda: not open_events(data), 60, "every kept question settled")
            reply, = fake.sent_by_bot(answered["id"])
            assert "help.example.com/password" in reply["content"]
            assert fake.sent_by_bot(person["id"]) == []
            assert [m["id"] for m in fake.sent_by_bot(posted["id"])] == [earlier["id"]]
            assert fake.sent_by_bot(support) == []
        except BaseException:
            sys.stderr.write(log.read_text(errors="replace")[-8000:])
            sys.stderr.write(f"\nopen events: {open_events(data)}\n")
            raise
        finally:
            kill(first)
            if second is not None:
                terminate(second)
