"""The Slack scenario suite: each test runs over Socket Mode and over signed HTTP."""
from __future__ import annotations

import asyncio

import pytest

from tests.bots.slack.conftest import WIRE_S

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(240)]


async def test_mention_is_answered_once_in_its_thread(confab):
    fake = confab.fake
    mention = await confab.mention("What is the capital of France?")
    answer = await confab.answer("C1", mention["ts"])
    assert answer["thread_ts"] == mention["ts"] and answer["text"].strip()
    job_id = await confab.settled(f"slack:C1:{mention['ts']}")    # its one job, done and delivered
    assert [j["id"] for j in confab.jobs()] == [job_id]
    answers = [m for m in fake.bot_messages("C1", mention["ts"])]
    assert len(answers) == 1, answers
    posts = [c for c in fake.calls_to("chat.postMessage") if c.params.get("thread_ts") == mention["ts"]]
    assert len(posts) == 1 and posts[0].params["text"].startswith(("⏳", "✍️"))
    updates = [c for c in fake.calls_to("chat.update") if c.ok and c.params["ts"] == answer["ts"]]
    assert updates and updates[-1].params["text"] == answer["text"]
    assert "<@UBOT>" not in confab.jobs()[-1]["messages"][-1]["content"]


async def test_a_late_ack_is_caught_on_confabs_own_clock(fake, mode, engine):
    """The 3 s rule can fail, and it is Confab's time that counts: a question is kept in the
    store before its ack, and while another writer holds the store that takes longer than Slack
    allows. Receipt to ack, as Confab measured it, says so."""
    import sqlite3

    from tests.bots.slack.conftest import ACK_S, running_confab
    async with running_confab(fake, mode, engine, check_acks=False) as confab:
        other = sqlite3.connect(engine.settings.data_path / "confab.db", timeout=5)
        other.execute("BEGIN IMMEDIATE")                 # the store's write lock, held
        release = asyncio.get_running_loop().call_later(ACK_S + 0.5, other.commit)
        try:
            with pytest.raises(AssertionError, match="Slack allows"):
                await confab.deliver(fake.im_event("Say yes.", user="U2"))
        finally:
            release.cancel()
            other.commit()
            other.close()
        assert len(confab.late_acks()) == 1 and confab.late_acks()[0].seconds >= ACK_S
        await confab.idle()


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
    assert placeholder["text"].startswith("⏳ queued, #1")
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
            await fake.wait_ack(eid, WIRE_S)
    other = fake.bot_message_event("<@UBOT> beep", channel="C1")
    await confab.deliver(other)
    plain = fake.message_event("just chatting, no mention", channel="C1")
    await confab.deliver(plain)
    reaction = {"type": "reaction_added", "user": "U1", "reaction": "eyes",
                "item": {"type": "message", "channel": "C1", "ts": mention["ts"]}, "event_ts": fake.new_ts()}
    await confab.deliver(reaction)   # acked though nobody listens for it
    # Confab decides what to answer before the ack, and answers only what it kept then: these
    # were not kept, so nothing can come of them
    assert confab.kept(f"slack:C1:{other['ts']}") is None and confab.kept(f"slack:C1:{plain['ts']}") is None
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
    reply = await fake.wait_message("C1", lambda m: m.get("bot_id") and not m.get("blocks")
                                    and not m["text"].startswith(("⏳", "✍️")), thread_ts=clip["ts"], timeout=20)
    assert len(reply["text"]) < 300 and "▌" not in reply["text"]
    # a file-only message gets a word, never silence
    image = fake.file_share_event([fake.image_file(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32, user="U2")],
                                  user="U2", channel=fake.im_with("U2"))
    await confab.deliver(image)
    note = await fake.wait_until(lambda: [m for m in fake.bot_messages(image["channel"]) + fake.ephemerals
                                          if "image" in m.get("text", "")], 10, "a note about the image")
    assert note


async def test_access_lists_and_slash_outside_the_bots_channels(fake, mode, engine):
    from tests.bots.slack.conftest import running_confab
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
def spoken_clips(tmp_path_factory) -> dict[str, bytes]:
    """'What is the capital of France' as Slack clips carry it: webm/opus from the desktop
    client, m4a (AAC in MP4, its index at the end as ffmpeg writes it) from phones."""
    import shutil
    import subprocess
    if not (shutil.which("espeak-ng") and shutil.which("ffmpeg")):
        pytest.skip("espeak-ng and ffmpeg make the test's speech")
    folder = tmp_path_factory.mktemp("clip")
    wav = folder / "q.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "What is the capital of France?"], check=True, timeout=30)
    clips = {}
    for mimetype, name, codec in (("audio/webm", "q.webm", "libopus"), ("audio/mp4", "q.m4a", "aac")):
        out = folder / name
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(wav), "-c:a", codec,
                        "-b:a", "32k", str(out)], check=True, timeout=30)
        clips[mimetype] = out.read_bytes()
    return clips


async def _until(predicate, timeout: float, what: str):
    """Polls the engine's state (the fake's wait_until re-checks only when Slack calls arrive)."""
    async def loop():
        while not (result := predicate()):
            await asyncio.sleep(0.02)
        return result
    try:
        return await asyncio.wait_for(loop(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


def _finished(confab, m: dict) -> bool:
    """A bot message that is finished: no button, no cursor, no status."""
    return (m.get("bot_id") == confab.fake.bot_id and not m.get("blocks") and not m.get("files")
            and "▌" not in m.get("text", "") and not m["text"].startswith(("⏳", "✍️")))


@pytest.mark.parametrize("mimetype", ["audio/webm", "audio/mp4"])
async def test_a_voice_clip_goes_through_the_voice_note_pipeline(confab, spoken_clips, mimetype):
    fake = confab.fake
    clip = fake.audio_clip_event(spoken_clips[mimetype], mimetype=mimetype, duration_ms=2000, channel="C1")
    assert clip["files"][0]["filetype"] == {"audio/webm": "webm", "audio/mp4": "m4a"}[mimetype]
    await confab.deliver(clip)
    spoken = await fake.wait_message("C1", lambda m: m.get("bot_id") == fake.bot_id and m.get("files"),
                                     thread_ts=clip["ts"], timeout=180)
    assert spoken["files"][0]["name"] == "answer.mp3"
    # one message holds the transcript and the answer, finished before the audio was uploaded
    said = [m for m in fake.bot_messages("C1", clip["ts"]) if not m.get("files")]
    assert len(said) == 1 and _finished(confab, said[0]), said
    heard, _, answer = said[0]["text"].partition("\n\n")
    assert heard.startswith("🎧 “") and "capital" in heard.lower() and "france" in heard.lower()
    assert answer.strip()
    download = fake.calls_to("files.download")[0]
    assert download.params["authed"] and download.headers["Authorization"] == f"Bearer {fake.bot_token}"
    done = fake.calls_to("files.completeUploadExternal")[-1]
    assert done.params["channel_id"] == "C1" and done.params["thread_ts"] == clip["ts"]
    await confab.idle()
    # three stages, each a job of its own at the asker's priority, and the thread remembers
    kinds = [j["kind"] for j in confab.jobs()]
    assert kinds == ["transcribe", "chat", "speak"], kinds
    assert len({j["priority"] for j in confab.jobs()}) == 1
    history = await confab.engine.history(f"slack:T1:C1:{clip['ts']}")
    assert [r for r, _ in history] == ["user", "assistant"] and "France" in history[0][1]


async def test_cancel_button_cancels_the_voice_note_at_a_later_stage(confab, spoken_clips):
    fake, engine = confab.fake, confab.engine
    clip = fake.audio_clip_event(spoken_clips["audio/webm"], mimetype="audio/webm", duration_ms=2000,
                                 channel="C1", user="U2")
    await confab.deliver(clip)
    note = await _until(lambda: next(iter(confab.adapter.pipelines.values()), None), 30, "the pipeline")
    await _until(lambda: note.handles and note.handles[0].status == "running", 60, "transcribing")
    blocker = await _blocker(engine)          # runs next, so the chat stage waits behind it
    await _until(lambda: note.stage == "chat" and len(note.handles) == 2, 120, "the chat stage")
    assert note.handles[1].status == "queued"
    status = await fake.wait_message("C1", lambda m: m.get("bot_id") and m.get("blocks"),
                                     thread_ts=clip["ts"], timeout=10)
    button = status["blocks"][1]["elements"][0]
    assert button["value"] == note.handles[0].id and note.handles[0].done   # the first stage's id
    await confab.click("confab_cancel", button["value"], user="U2", channel="C1", message_ts=status["ts"])
    final = await fake.wait_message("C1", lambda m: m["ts"] == status["ts"] and _finished(confab, m)
                                    and m["text"].endswith("🛑 Cancelled."), thread_ts=clip["ts"], timeout=30)
    assert final
    await blocker.cancel()
    await confab.idle()
    assert [h.job.kind for h in note.handles] == ["transcribe", "chat"] and note.handles[1].status == "cancelled"
    assert not [m for m in fake.bot_messages("C1", clip["ts"]) if m.get("files")]


# -- images: /imagine with a tiny random-weight diffusers pipeline, and screenshots read by OCR --

@pytest.fixture(scope="module")
def tiny_sd_model(engine):
    """A tiny Stable Diffusion of the real architecture, registered as `confab models add` does."""
    pytest.importorskip("diffusers")
    from tests.models.tiny_diffusers import tiny_sd
    engine.registry.add(tiny_sd(), name="tiny-sd")
    engine.refresh_models()
    return "tiny-sd"


def _buttons(m: dict) -> list[str]:
    return [el["action_id"] for b in m.get("blocks") or [] if b.get("type") == "actions"
            for el in b["elements"]]


async def test_imagine_shows_progress_sends_the_image_and_rerolls(confab, tiny_sd_model):
    fake = confab.fake
    assert await confab.slash("/imagine", "a lighthouse --steps 3 --seed 42") < 3.0
    parent = await fake.wait_message("C1", lambda m: "asked:" in m.get("text", "") and "lighthouse" in m["text"],
                                     timeout=10)
    image = await fake.wait_message("C1", lambda m: m.get("bot_id") == fake.bot_id and m.get("files"),
                                    thread_ts=parent["ts"], timeout=90)
    assert image["files"][0]["name"] == "confab-42.png"
    assert fake.file_contents[image["files"][0]["id"]].startswith(b"\x89PNG")
    status = await fake.wait_message("C1", lambda m: _buttons(m) == ["confab_reroll"], thread_ts=parent["ts"],
                                     timeout=10)
    assert "seed 42" in status["text"] and "3 steps" in status["text"]
    edits = [c for c in fake.calls_to("chat.update") if c.ok and c.params["ts"] == status["ts"]]
    assert any("step 3 of 3" in c.params["text"] for c in edits)
    assert any("confab_cancel" in str(c.params.get("blocks")) for c in edits)    # while it ran
    # the status message's section shows what its text says (blocks win over text in Slack)
    assert status["blocks"][0]["text"]["text"] == status["text"]
    reroll = status["blocks"][1]["elements"][0]
    await confab.click("confab_reroll", reroll["value"], user="U1", channel="C1", message_ts=status["ts"])
    again = await fake.wait_until(lambda: [m for m in fake.bot_messages("C1", parent["ts"]) if m.get("files")][1:],
                                  90, "the re-rolled image")
    assert again[0]["files"][0]["name"].startswith("confab-") and again[0]["files"][0]["name"] != "confab-42.png"
    await confab.idle()
    prompts = [(j["prompt"], j["steps"]) for j in confab.jobs() if j["kind"] == "image"]
    assert prompts == [("a lighthouse", 3), ("a lighthouse", 3)]


async def test_imagine_cancel_button(confab, tiny_sd_model):
    fake, engine = confab.fake, confab.engine
    blocker = await _blocker(engine)
    mention = await confab.mention("/imagine a storm --steps 2", user="U2")
    queued = await fake.wait_message("C1", lambda m: _buttons(m) == ["confab_cancel"], thread_ts=mention["ts"],
                                     timeout=10)
    assert "a storm" in queued["blocks"][0]["text"]["text"]
    await confab.click("confab_cancel", queued["blocks"][1]["elements"][0]["value"], user="U2", channel="C1",
                       message_ts=queued["ts"])
    await fake.wait_message("C1", lambda m: m["ts"] == queued["ts"] and m["text"] == "🛑 Cancelled."
                            and not m.get("blocks"), thread_ts=mention["ts"], timeout=10)
    await blocker.cancel()
    await confab.idle()
    assert not [m for m in fake.bot_messages("C1", mention["ts"]) if m.get("files")]


async def test_a_screenshot_with_a_question_is_answered_in_its_thread(confab):
    from engine.messages import OCR_ONLY_NOTE
    from tests.models.tiny_diffusers import text_png
    fake = confab.fake
    shot = fake.image_file(text_png(["Error 503: disk full"]), name="error.png", user="U2")
    mention = await confab.mention("what went wrong?", user="U2", files=[shot])
    answer = await confab.answer("C1", mention["ts"])
    assert answer["text"].startswith(OCR_ONLY_NOTE.split(",")[0])
    await confab.idle()
    download = [c for c in fake.calls_to("files.download") if c.params["file"] == shot["id"]]
    assert download and download[0].params["authed"]
    jobs = confab.jobs()
    assert [j["kind"] for j in jobs] == ["ocr", "chat"]
    context = " ".join(m["content"] for m in jobs[-1]["messages"])
    assert "disk full" in context.lower() and "what went wrong?" in context


@pytest.mark.parametrize("content, words", [
    (b"not really a png", "not an image"),
    (b"\x89PNG\r\n\x1a\n" + bytes(64), "damaged"),
])
async def test_a_file_that_is_not_a_usable_image_gets_clear_words_in_its_thread(confab, content, words):
    fake = confab.fake
    bad = fake.image_file(content, name="shot.png", user="U2")
    mention = await confab.mention("what is this?", user="U2", files=[bad])
    said = await fake.wait_message("C1", lambda m: m.get("bot_id") == fake.bot_id and words in m.get("text", ""),
                                   thread_ts=mention["ts"], timeout=30)
    assert said["text"].startswith("🖼️")
    await confab.idle()
    assert not confab.jobs()                      # refused before anything was queued


async def test_a_reroll_acknowledged_before_a_stop_is_drawn_after_it(fake, engine, tiny_sd_model):
    """A Re-roll click is kept in the store before its ack. Confab stops after the ack and before
    the job (its admin check waits on users.info, which the fake holds); the next Confab draws
    the picture, once, in the thread of the one clicked."""
    import time

    from slack_sdk.web.async_client import AsyncWebClient

    from bots.common.image_commands import ImagineSpec
    from tests.bots.slack.conftest import running_confab

    client = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)
    drawn = await client.chat_postMessage(channel="C1", text="🎨 “a lighthouse”, seed 42")
    value = ImagineSpec("a lighthouse", 42, 2, model=tiny_sd_model).payload()

    async def kept() -> list[str]:
        return [k for k, _ in await engine.open_events("slack", time.time() + 1) if k.startswith("slack:action:")]

    fake.hold("users.info")
    try:
        async with running_confab(fake, "socket", engine) as confab:
            await confab.click("confab_reroll", value, user="U1", channel="C1", message_ts=drawn["ts"])
            await fake.wait_for("users.info", timeout=10)
        click, = await kept()
    finally:
        fake.release("users.info")
    async with running_confab(fake, "socket", engine) as confab:
        await fake.wait_until(lambda: [m for m in fake.bot_messages("C1", drawn["ts"]) if m.get("files")], 90,
                              "the re-rolled picture")
        await confab.settled(click, delivered=False)       # its one job done, nothing in flight
        pictures = [m for m in fake.bot_messages("C1", drawn["ts"]) if m.get("files")]
        assert len(pictures) == 1 and pictures[0]["files"][0]["name"] != "confab-42.png"
        assert await kept() == []
