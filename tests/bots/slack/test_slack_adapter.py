"""The Slack scenario suite: each test runs over Socket Mode and over signed HTTP."""
from __future__ import annotations

import asyncio

import pytest

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(240)]


async def test_mention_is_answered_once_in_its_thread(confab):
    fake = confab.fake
    mention = await confab.mention("What is the capital of France?")
    answer = await confab.answer("C1", mention["ts"])
    assert answer["thread_ts"] == mention["ts"] and answer["text"].strip()
    await confab.idle()
    await asyncio.sleep(0.3)   # a second answer to the twin event would be posted by now
    answers = [m for m in fake.bot_messages("C1", mention["ts"])]
    assert len(answers) == 1, answers
    posts = [c for c in fake.calls_to("chat.postMessage") if c.params.get("thread_ts") == mention["ts"]]
    assert len(posts) == 1 and posts[0].params["text"].startswith(("⏳", "✍️"))
    updates = [c for c in fake.calls_to("chat.update") if c.ok and c.params["ts"] == answer["ts"]]
    assert updates and updates[-1].params["text"] == answer["text"]
    assert "<@UBOT>" not in confab.jobs()[-1]["messages"][-1]["content"]


async def test_a_dm_is_answered(confab):
    fake = confab.fake
    dm = fake.im_event("Say hello in one short sentence.", user="U2")
    await confab.deliver(dm)
    answer = await confab.answer(dm["channel"], None)
    assert answer["text"].strip() and not answer.get("thread_ts")
    job = confab.jobs()[-1]
    assert job["origin"]["is_dm"] and job["messages"][-1]["content"] == "Say hello in one short sentence."


async def test_slash_ask_is_acked_within_3s_and_answered_in_a_thread(confab):
    fake = confab.fake
    took = await confab.slash("/ask", "What colour is the sky?")
    assert took < 3.0
    parent = await fake.wait_message("C1", lambda m: "asked:" in m.get("text", ""), timeout=10)
    assert parent["text"] == "<@U1> asked: /ask What colour is the sky?"
    answer = await confab.answer("C1", parent["ts"])
    assert answer["text"].strip()
    await confab.idle()
    # the thread under the command is the conversation
    history = await confab.engine.history(f"slack:T1:C1:{parent['ts']}")
    assert [r for r, _ in history] == ["user", "assistant"]


async def test_private_commands_answer_ephemerally(confab):
    fake = confab.fake
    for command, words in (("/help", "/transcribe"), ("/models", "smollm2-135m-instruct")):
        assert await confab.slash(command) < 3.0
        await fake.wait_until(lambda: any(words in p["json"].get("text", "") for p in fake.response_url_posts),
                              10, f"the answer to {command}")
        post = next(p for p in fake.response_url_posts if words in p["json"].get("text", ""))
        assert post["json"]["response_type"] == "ephemeral"
    assert not fake.bot_messages("C1")   # nothing said in the channel


async def _blocker(engine, tokens: int = 600):
    """A long job of someone else's that keeps the single worker busy."""
    from engine import ChatJob, ChatMessage, Origin
    return await engine.submit(ChatJob(origin=Origin(platform="test", user="blocker"), max_tokens=tokens,
                                       temperature=0.0, messages=[ChatMessage(
                                           "user", "Count from 1 to 1000, one number per line.")]))


async def test_queue_and_cancel(confab):
    fake, engine = confab.fake, confab.engine
    blocker = await _blocker(engine)
    mention = await confab.mention("Tell me a story.", user="U2")
    placeholder = await fake.wait_message("C1", lambda m: m.get("bot_id") and m.get("blocks"),
                                          thread_ts=mention["ts"], timeout=10)
    assert placeholder["text"].startswith("⏳ Queued, #1")
    await confab.slash("/queue", user="U2")
    queued = await fake.wait_until(lambda: [p for p in fake.response_url_posts
                                            if "Your jobs" in p["json"].get("text", "")], 10, "/queue")
    assert "#1 in line" in queued[0]["json"]["text"]
    await confab.slash("/cancel", user="U2")
    await fake.wait_until(lambda: [p for p in fake.response_url_posts
                                   if p["json"].get("text", "").startswith("Cancelled job_")], 10, "/cancel")
    await fake.wait_message("C1", lambda m: m.get("text") == "🛑 Cancelled.", thread_ts=mention["ts"], timeout=10)
    await blocker.cancel()
    await confab.idle()
    assert not any(m.get("blocks") for m in fake.bot_messages("C1", mention["ts"]))  # button gone


async def test_cancel_button(confab):
    fake, engine = confab.fake, confab.engine
    blocker = await _blocker(engine)
    mention = await confab.mention("Tell me a story.", user="U2")
    placeholder = await fake.wait_message("C1", lambda m: m.get("bot_id") and m.get("blocks"),
                                          thread_ts=mention["ts"], timeout=10)
    button = placeholder["blocks"][1]["elements"][0]
    assert button["action_id"] == "confab_cancel"
    await confab.click("confab_cancel", button["value"], user="U1", channel="C1",  # U1 is a workspace admin
                       message_ts=placeholder["ts"])
    await fake.wait_message("C1", lambda m: m.get("text") == "🛑 Cancelled.", thread_ts=mention["ts"], timeout=10)
    await blocker.cancel()


async def test_thread_memory(confab):
    fake = confab.fake
    first = await confab.mention("My name is Zorblax. Say hi to me.")
    await confab.answer("C1", first["ts"])
    await confab.idle()
    follow = await confab.mention("What is my name?", thread_ts=first["ts"])
    await fake.wait_until(lambda: len(fake.bot_messages("C1", first["ts"])) >= 2, 20, "the second answer")
    await confab.idle()
    asked = confab.jobs()[-1]["messages"]
    contents = [m["content"] for m in asked]
    assert contents[-1] == "What is my name?" and any("Zorblax" in c for c in contents[:-1])
    assert follow["thread_ts"] == first["ts"]
    assert len(await confab.engine.history(f"slack:T1:C1:{first['ts']}")) == 4


async def test_own_and_other_bots_messages_are_ignored(confab):
    fake = confab.fake
    mention = await confab.mention("Say yes.")
    await confab.answer("C1", mention["ts"])
    await confab.idle()
    # the echoes of Confab's own messages came back and were acknowledged, and not answered
    if confab.mode == "socket":
        await fake.wait_until(lambda: fake.echoed_envelopes, 5, "the echoes")
        for eid in list(fake.echoed_envelopes):
            await fake.wait_ack(eid, 3)
    other = fake.bot_message_event("<@UBOT> beep", channel="C1")
    await confab.deliver(other)
    plain = fake.message_event("just chatting, no mention", channel="C1")
    await confab.deliver(plain)
    reaction = {"type": "reaction_added", "user": "U1", "reaction": "eyes",
                "item": {"type": "message", "channel": "C1", "ts": mention["ts"]}, "event_ts": fake.new_ts()}
    await confab.deliver(reaction)   # acked though nobody listens for it
    await asyncio.sleep(0.5)
    await confab.idle()
    assert len(confab.jobs()) == 1
    assert not fake.bot_messages("C1", other["ts"]) and not fake.bot_messages("C1", plain["ts"])


async def test_429_is_retried_after_retry_after(confab):
    fake = confab.fake
    fake.rate_limit("chat.postMessage", times=1, retry_after=1)
    mention = await confab.mention("Say yes.")
    await confab.answer("C1", mention["ts"])
    statuses = [c.status for c in fake.calls_to("chat.postMessage")]
    assert statuses[:2] == [429, 200]
    first, second = fake.calls_to("chat.postMessage")[:2]
    assert second.time - first.time >= 0.9


async def test_errors_become_short_replies(confab):
    fake = confab.fake
    clip = fake.audio_clip_event(b"\x1aE\xdf\xa3 this is not really webm", channel="C1")
    await confab.deliver(clip)
    reply = await fake.wait_message("C1", lambda m: m.get("bot_id") and m["text"].startswith("🎧 ")
                                    and "Listening" not in m["text"], thread_ts=clip["ts"], timeout=20)
    assert len(reply["text"]) < 300
    # a file-only message gets a word, never silence
    image = fake.file_share_event([fake.image_file(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32, user="U2")],
                                  user="U2", channel=fake.im_with("U2"))
    await confab.deliver(image)
    note = await fake.wait_until(lambda: [m for m in fake.bot_messages(image["channel"]) + fake.ephemerals
                                          if "image" in m.get("text", "")], 10, "a note about the image")
    assert note


async def test_access_lists_and_slash_outside_the_bots_channels(fake, mode, engine):
    from .conftest import running_confab
    async with running_confab(fake, mode, engine, slack_deny_users=("U2",)) as confab:
        mention = await confab.mention("Hello?", user="U2")
        await fake.wait_until(lambda: [e for e in fake.ephemerals if e["for_user"] == "U2"], 10, "a refusal")
        assert "not set up to answer you" in fake.ephemerals[-1]["text"]
        assert not fake.bot_messages("C1", mention["ts"])
        # C2: Confab is not a member, so the answer comes back through the response_url
        await confab.slash("/ask", "Say yes.", channel="C2")
        await fake.wait_until(lambda: [p for p in fake.response_url_posts
                                       if p["json"].get("response_type") == "in_channel"], 30, "the answer")
        await confab.idle()
    assert not fake.problems, fake.problems


@pytest.fixture(scope="module")
def spoken_clip(tmp_path_factory) -> bytes:
    """'What is the capital of France' as a Slack desktop clip would carry it: webm/opus."""
    import shutil
    import subprocess
    if not (shutil.which("espeak-ng") and shutil.which("ffmpeg")):
        pytest.skip("espeak-ng and ffmpeg make the test's speech")
    folder = tmp_path_factory.mktemp("clip")
    wav, webm = folder / "q.wav", folder / "q.webm"
    subprocess.run(["espeak-ng", "-w", str(wav), "What is the capital of France?"], check=True, timeout=30)
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(wav), "-c:a", "libopus",
                    "-b:a", "32k", str(webm)], check=True, timeout=30)
    return webm.read_bytes()


async def test_a_voice_clip_is_transcribed_answered_and_spoken(confab, spoken_clip):
    fake = confab.fake
    clip = fake.audio_clip_event(spoken_clip, mimetype="audio/webm", duration_ms=2000, channel="C1")
    await confab.deliver(clip)
    heard = await fake.wait_message("C1", lambda m: m.get("bot_id") and m["text"].startswith("🎧 “"),
                                    thread_ts=clip["ts"], timeout=180)
    assert "capital" in heard["text"].lower() and "france" in heard["text"].lower()
    spoken = await fake.wait_message("C1", lambda m: m.get("bot_id") == fake.bot_id and m.get("files"),
                                     thread_ts=clip["ts"], timeout=180)
    assert spoken["files"][0]["name"].endswith(".mp3")
    download = fake.calls_to("files.download")[0]
    assert download.params["authed"] and download.headers["Authorization"] == f"Bearer {fake.bot_token}"
    done = fake.calls_to("files.completeUploadExternal")[-1]
    assert done.params["channel_id"] == "C1" and done.params["thread_ts"] == clip["ts"]
    assert any(confab.is_answer(m, clip["ts"]) and not m.get("files") and not m["text"].startswith("🎧")
               for m in fake.bot_messages("C1", clip["ts"]))
