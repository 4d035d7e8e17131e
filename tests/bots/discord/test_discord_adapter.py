"""Confab's Discord adapter end to end: the real discord.py client, the real engine and the real
SmolLM2 model (Whisper and Piper for voice), against the strict loopback fake of Discord.

One fake, engine and adapter serve the module; each test starts its own conversation. The
adapter is pointed at the fake only through CONFAB_DISCORD_API_URL / _GATEWAY_URL (its own
settings), as a user would point it at a proxy. Every wait is bounded.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import shutil
import subprocess
import time

import discord
import discord.gateway
import discord.http
import pytest
import pytest_asyncio
from aiohttp import web

from bots.discord.access import DiscordAccess
from bots.discord.voice import check_http_layer
from tests.bots.discord.rig import PLACEHOLDER, T, running_rig
from tests.conftest import requires_chat_model
from tests.fakes.discord.protocol import MessageFlags

pytestmark = [requires_chat_model, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]


def speech_installed() -> bool:
    import importlib.util
    return all(importlib.util.find_spec(m) for m in ("faster_whisper", "piper")) and bool(
        shutil.which("espeak-ng") and shutil.which("ffmpeg"))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def rig(tmp_path_factory, shared_models_dir):
    from bots.common import speech
    async with running_rig(tmp_path_factory.mktemp("discord"), shared_models_dir,
                           register=(speech.register_commands,)) as rig:
        yield rig


# -- start-up, internals -----------------------------------------------------------------------

async def test_discord_py_internals_still_where_the_adapter_expects(rig):
    """If this fails after a discord.py upgrade, fix bots/discord/client.point_at and
    bots/discord/voice.send_voice_message."""
    check_http_layer()
    assert discord.http.Route.BASE == rig.fake.api_base
    assert str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == rig.fake.gateway_url
    assert discord.http.Route("GET", "/users/@me").url == rig.fake.api_base + "/users/@me"
    assert rig.fake.gateway_connections[0].path == "/gw"


async def test_commands_synced_with_typed_options(rig):
    names = {c["name"]: c for c in rig.fake.global_commands}
    assert {"ask", "speak", "transcribe", "translate", "imagine", "queue", "cancel", "models", "help",
            "reset", "voicenote"} <= set(names)
    ask = names["ask"]["options"][0]
    assert ask["name"] == "question" and ask["type"] == 3 and ask["required"] and ask["description"]
    assert names["transcribe"]["options"][0]["type"] == 11          # an attachment
    assert all(c["description"] for c in names.values())


# -- conversations -----------------------------------------------------------------------------

async def test_mention_answered_by_editing_a_placeholder(rig):
    fake = rig.fake
    mention = fake.message_create_mention("What is the capital of France?")
    await fake.dispatch("MESSAGE_CREATE", mention)
    placeholder = await rig.bot_reply_to(mention["id"])
    assert placeholder["content"] == PLACEHOLDER
    assert any(c.startswith("confab:cancel:job_") for c in rig.components(placeholder["id"])) or \
        "confab:speak" in rig.components(placeholder["id"])
    final = await rig.answered(placeholder["id"])
    assert final["content"] and final["content"] != PLACEHOLDER and "▌" not in final["content"]
    job = rig.jobs()[-1]
    assert final["content"] == (await job.result()).text.strip()
    assert fake.find("PATCH", f"/messages/{placeholder['id']}", status=200)
    assert rig.components(placeholder["id"]) == ["confab:speak"]
    assert job.priority == 1 and job.job.origin.user == fake.user["id"]
    assert job.job.messages[-1].content == "What is the capital of France?"   # mention stripped


async def test_direct_message_is_class_0(rig):
    fake = rig.fake
    dm = fake.message_create_dm("What is the capital of France?")
    await fake.dispatch("MESSAGE_CREATE", dm)
    reply = await rig.bot_reply_to(dm["id"])
    assert reply["channel_id"] == fake.dm_channel_id
    await rig.answered(reply["id"])
    job = rig.jobs()[-1]
    assert job.job.origin.is_dm and job.priority == 0


async def test_reply_chain_is_the_memory(rig):
    fake = rig.fake
    first = fake.message_create_mention("My name is Zorblax. Say hello to me.")
    await fake.dispatch("MESSAGE_CREATE", first)
    answer = await rig.answered((await rig.bot_reply_to(first["id"]))["id"])
    follow = fake.message_create_reply("What is my name?", fake.messages[answer["id"]])
    await fake.dispatch("MESSAGE_CREATE", follow)
    await rig.answered((await rig.bot_reply_to(follow["id"]))["id"])
    messages = [(m.role, m.content) for m in rig.jobs()[-1].job.messages]
    assert messages[0][0] == "system"
    assert messages[1:] == [("user", "My name is Zorblax. Say hello to me."),
                            ("assistant", fake.messages[answer["id"]]["content"]),
                            ("user", "What is my name?")]


async def test_reply_chain_is_bounded(rig):
    fake = rig.fake
    limit = rig.engine.settings.history_messages
    last = limit + 4
    previous = None
    for i in range(last + 1):     # a chain longer than the window, stored on the fake
        author = fake.bot_user if (last - i) % 2 == 0 else fake.user     # the last turn is Confab's
        ref = {"message_id": previous["id"]} if previous else None
        previous = fake._make_message(fake.channel_id, author, f"turn {i}", message_reference=ref)
    follow = fake.message_create_reply("Summarise.", previous)      # a reply to Confab: addressed
    await fake.dispatch("MESSAGE_CREATE", follow)
    await rig.answered((await rig.bot_reply_to(follow["id"]))["id"])
    messages = rig.jobs()[-1].job.messages
    assert len(messages) == 1 + limit + 1
    assert [(m.role, m.content) for m in messages[1:-1]] == [
        ("assistant" if (last - i) % 2 == 0 else "user", f"turn {i}") for i in range(last - limit + 1, last + 1)]
    assert messages[-1].content == "Summarise."


async def test_other_bots_are_ignored_unless_configured(rig):
    fake = rig.fake
    robot = fake.add_user("robot", bot=True)
    ignored = fake.message_create_mention("What is 2 + 2?", author=robot)
    await fake.dispatch("MESSAGE_CREATE", ignored)
    with pytest.raises(AssertionError):
        await rig.bot_reply_to(ignored["id"], timeout=1.5)
    saved = rig.adapter.access
    rig.adapter.access = DiscordAccess(rig.adapter.settings.replace(discord_answer_bots=(robot["id"],),
                                                                    discord_user_rate=0), rig.engine.settings.admins)
    try:
        welcome = fake.message_create_mention("What is the capital of France?", author=robot)
        await fake.dispatch("MESSAGE_CREATE", welcome)
        await rig.answered((await rig.bot_reply_to(welcome["id"]))["id"])
    finally:
        rig.adapter.access = saved


async def test_allow_lists_and_admin_roles(rig):
    fake = rig.fake
    settings = rig.adapter.settings
    saved = rig.adapter.access
    admin_role = fake.guilds[fake.guild_id]["admin_role_id"]
    rig.adapter.access = DiscordAccess(settings.replace(discord_allow_channels=(fake.support_channel_id,),
                                                        discord_admin_roles=(admin_role,)), rig.engine.settings.admins)
    try:
        outside = fake.message_create_mention("hello?", author=fake.other_user)
        await fake.dispatch("MESSAGE_CREATE", outside)
        refusal = await rig.bot_reply_to(outside["id"])
        assert refusal["content"].startswith("🚫") and "channel" in refusal["content"]
        # alice holds the Admins role: admins are class 0, in an allowed channel.
        inside = fake.message_create_mention("What is the capital of France?", channel_id=fake.support_channel_id)
        await fake.dispatch("MESSAGE_CREATE", inside)
        await rig.answered((await rig.bot_reply_to(inside["id"]))["id"])
        job = rig.jobs()[-1]
        assert job.job.origin.is_admin and job.priority == 0
    finally:
        rig.adapter.access = saved


# -- streaming -----------------------------------------------------------------------------------

@pytest.mark.timeout(240)
async def test_long_answer_split_at_2000_and_edits_throttled(rig):
    fake = rig.fake
    settings = rig.adapter.settings
    # at the model's own sampling a story's length varies: asked again (at most three times)
    # until one runs past Discord's 2,000 characters, which is what this test is about
    for _ in range(3):
        async with rig.long_answers():       # room for a long answer
            mention = fake.message_create_mention(
                "Write a very long story about a dragon who learns to bake bread, with many chapters.")
            await fake.dispatch("MESSAGE_CREATE", mention)
            first = await rig.bot_reply_to(mention["id"])
            started = time.monotonic()
            job = await rig.until(lambda: rig.jobs()[-1] if rig.jobs()[-1].job.max_tokens is None
                                  and "dragon" in rig.jobs()[-1].job.messages[-1].content
                                  and not rig.jobs()[-1].done else None, "the job", 10)
            text = (await asyncio.wait_for(job.result(), 200)).text
            elapsed = time.monotonic() - started
            await rig.until(lambda: "confab:speak" in rig.components(first["id"])
                            or any("confab:speak" in rig.components(m["id"]) for m in fake.sent_by_bot(fake.channel_id)
                                   if int(m["id"]) > int(first["id"])), "the final edit")
        if len(text) > 2000:
            break
    pieces = [m for m in fake.sent_by_bot(fake.channel_id) if int(m["id"]) >= int(first["id"])
              and not m["flags"] & MessageFlags.IS_VOICE_MESSAGE]
    assert len(text) > 2000, f"the model wrote only {len(text)} characters"
    assert len(pieces) >= 2 and all(0 < len(p["content"]) <= 2000 for p in pieces)
    assert "".join(p["content"] for p in pieces).replace(" ", "").replace("\n", "") == \
        text.replace(" ", "").replace("\n", "")
    edits = fake.find("PATCH", f"/messages/{first['id']}")
    assert len(edits) <= elapsed / settings.discord_edit_interval_s + 3


async def test_429_on_an_edit_is_honoured(rig):
    fake = rig.fake
    fake.rate_limit("/messages/", times=1, retry_after=0.6, method="PATCH")
    mention = fake.message_create_mention("What is the capital of France?")
    await fake.dispatch("MESSAGE_CREATE", mention)
    reply = await rig.bot_reply_to(mention["id"])
    limited = await fake.wait_for("PATCH", "/messages/", status=429, timeout=T)
    # the next edit of that message after the 429 (earlier edits of it may have gone through)
    retried = await fake.wait_for("PATCH", f"/messages/{limited.path.rsplit('/', 1)[-1]}",
                                  lambda r: r.index > limited.index, status=200, timeout=T)
    # measured on the fake's clock of arrivals: the test's own wake-ups may come late under load
    assert retried.at - limited.at >= 0.55
    final = await rig.answered(reply["id"])
    assert final["content"] != PLACEHOLDER


# -- interactions ----------------------------------------------------------------------------------

async def test_slash_ask_deferred_then_followed_up(rig):
    fake = rig.fake
    payload = fake.interaction_command("ask", {"question": "What is the capital of France?"})
    await fake.dispatch("INTERACTION_CREATE", payload)
    cb = await rig.acked(payload)
    assert cb.status == 200 and cb.json == {"type": 5}
    hook = await fake.wait_for("POST", f"/webhooks/{fake.application_id}/{payload['token']}", timeout=T)
    assert hook.status == 200
    state = fake.interaction_state(payload)
    await rig.until(lambda: "confab:speak" in rig.components(state.original_message_id), "the follow-up answer")
    original = fake.messages[state.original_message_id]
    assert original["content"] == (await rig.jobs()[-1].result()).text.strip() and not original["flags"] & MessageFlags.LOADING


async def test_slash_translate_gives_its_language_typed(rig):
    """Without the writing templates (bots/skills.py) /translate asks the chat model, in the
    language its option names."""
    fake = rig.fake
    payload = fake.interaction_command("translate", {"text": "Good morning", "language": "French"})
    await fake.dispatch("INTERACTION_CREATE", payload)
    await rig.acked(payload)
    await fake.wait_for("POST", f"/webhooks/{fake.application_id}/{payload['token']}", timeout=T)
    await rig.answered(fake.interaction_state(payload).original_message_id)
    assert rig.jobs()[-1].job.messages[-1].content == \
        "Translate into French, and answer with the translation only: Good morning"


async def test_slash_queue_is_ephemeral(rig):
    fake = rig.fake
    payload = fake.interaction_command("queue")
    await fake.dispatch("INTERACTION_CREATE", payload)
    cb = await rig.acked(payload)
    assert cb.json == {"type": 5, "data": {"flags": 64}}
    await fake.wait_for("POST", f"/webhooks/{fake.application_id}/{payload['token']}", timeout=10)
    state = fake.interaction_state(payload)
    msg = fake.messages[state.original_message_id]
    assert msg["flags"] & MessageFlags.EPHEMERAL and "jobs" in msg["content"]


async def test_a_late_first_response_is_caught_on_confabs_own_clock(rig):
    """Discord's 3 s can fail, and it is Confab's time that counts: a slash command is kept in
    the store before its defer, and while another writer holds the store that takes too long."""
    import sqlite3

    from tests.bots.discord.rig import ACK_S
    fake = rig.fake
    other = sqlite3.connect(rig.engine.settings.data_path / "confab.db", timeout=5)
    other.execute("BEGIN IMMEDIATE")                     # the store's write lock, held
    release = asyncio.get_running_loop().call_later(ACK_S + 0.5, other.commit)
    try:
        payload = fake.interaction_command("queue")
        await fake.dispatch("INTERACTION_CREATE", payload)
        with pytest.raises(AssertionError, match="after Confab received it"):
            await rig.acked(payload)
    finally:
        release.cancel()
        other.commit()
        other.close()
    assert [a.key for a in rig.late_acks()] == [payload["id"]]
    rig.adapter.acks.acks.clear()       # late on purpose: the rig checks the others on leaving
    await fake.wait_for("POST", f"/webhooks/{fake.application_id}/{payload['token']}", timeout=T)


async def test_cancel_button_stops_a_running_job(rig):
    async with rig.long_answers():       # a job still running when the click arrives
        await cancel_button_stops_a_running_job(rig)


async def cancel_button_stops_a_running_job(rig):
    fake = rig.fake
    mention = fake.message_create_mention("Write a very long story about a dragon, with many chapters.")
    await fake.dispatch("MESSAGE_CREATE", mention)
    placeholder = await rig.bot_reply_to(mention["id"])
    (button,) = [c for c in rig.components(placeholder["id"]) if c.startswith("confab:cancel:")]
    job_id = button.rsplit(":", 1)[1]
    click = fake.interaction_button(button, fake.messages[placeholder["id"]])
    await fake.dispatch("INTERACTION_CREATE", click)
    cb = await rig.acked(click)
    assert cb.status == 200 and cb.json["type"] == 5
    await fake.wait_for("POST", f"/webhooks/{fake.application_id}/{click['token']}", timeout=10)
    assert fake.messages[fake.interaction_state(click).original_message_id]["content"].startswith("🛑 Cancelled")
    handle = rig.engine.handle(job_id)
    await rig.until(lambda: handle.done, "the cancelled job to end", 10)
    assert handle.status == "cancelled"
    said = await fake.wait_for("POST", f"/channels/{fake.channel_id}/messages",
                               lambda r: (r.json or {}).get("content", "").startswith("🛑"), timeout=10)
    assert said.status == 200
    await rig.until(lambda: not rig.components(placeholder["id"]), "the Cancel button to go")


async def test_someone_else_cannot_cancel(rig):
    fake = rig.fake
    async with rig.long_answers():
        mention = fake.message_create_mention("Write a very long story about a dragon, with many chapters.")
        await fake.dispatch("MESSAGE_CREATE", mention)
        placeholder = await rig.bot_reply_to(mention["id"])
        (button,) = [c for c in rig.components(placeholder["id"]) if c.startswith("confab:cancel:")]
        click = fake.interaction_button(button, fake.messages[placeholder["id"]], user=fake.other_user)
        await fake.dispatch("INTERACTION_CREATE", click)
        await fake.wait_for("POST", f"/webhooks/{fake.application_id}/{click['token']}", timeout=10)
        assert "not yours" in fake.messages[fake.interaction_state(click).original_message_id]["content"]
        assert not rig.engine.handle(button.rsplit(":", 1)[1]).done


# -- the gateway -----------------------------------------------------------------------------------

async def test_reconnect_and_invalid_session_survived(rig):
    fake = rig.fake
    identifies, resumes = fake.identify_count, fake.resume_count
    await fake.send_reconnect()
    away = fake.message_create_mention("What is the capital of France?")
    await fake.dispatch("MESSAGE_CREATE", away)                 # replayed on RESUME
    await fake.wait_for_resume(resumes + 1, timeout=10)
    await rig.answered((await rig.bot_reply_to(away["id"]))["id"])
    await fake.send_invalid_session(resumable=False)
    await fake.wait_for_identify(identifies + 1, timeout=10)
    after = fake.message_create_mention("What is the capital of France?")
    await fake.dispatch("MESSAGE_CREATE", after)
    await rig.answered((await rig.bot_reply_to(after["id"]))["id"])


# -- voice and files ------------------------------------------------------------------------------

def spoken_ogg(text: str, tmp_path) -> tuple[bytes, float]:
    wav, ogg = tmp_path / "q.wav", tmp_path / "q.ogg"
    subprocess.run(["espeak-ng", "-s", "150", "-w", str(wav), text], check=True, timeout=30)
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(wav), "-c:a", "libopus",
                    "-b:a", "32k", str(ogg)], check=True, timeout=30)
    return ogg.read_bytes(), probe_duration(ogg.read_bytes(), tmp_path)


def probe_duration(data: bytes, tmp_path) -> float:
    path = tmp_path / "probe.ogg"
    path.write_bytes(data)
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration:stream=codec_name",
                          "-of", "json", str(path)], capture_output=True, check=True, timeout=30).stdout
    info = json.loads(out)
    assert info["streams"][0]["codec_name"] == "opus"
    return float(info["format"]["duration"])


@pytest.mark.skipif(not speech_installed(), reason="faster-whisper, piper, espeak-ng and ffmpeg are needed")
async def test_voice_message_answered_in_text_then_by_voice(rig, tmp_path):
    fake = rig.fake
    audio, seconds = spoken_ogg("What is the capital of France?", tmp_path)
    voice = fake.message_create_voice(audio, duration_secs=round(seconds, 2), dm=True)
    await fake.dispatch("MESSAGE_CREATE", voice)
    text = await rig.bot_reply_to(voice["id"], timeout=90)
    assert not text["flags"] & MessageFlags.IS_VOICE_MESSAGE
    spoken = await fake.wait_for("POST", f"/channels/{fake.dm_channel_id}/messages",
                                 lambda r: (r.json or {}).get("flags") == MessageFlags.IS_VOICE_MESSAGE, timeout=90)
    assert spoken.status == 200, spoken.response
    final = fake.messages[text["id"]]
    assert final["content"].startswith("🎙️") and "capital" in final["content"].lower()
    assert "france" in final["content"].lower()
    (att,) = spoken.json["attachments"]
    (file,) = spoken.files
    assert "content" not in spoken.json and file.data[:4] == b"OggS" and b"OpusHead" in file.data[:200]
    true = probe_duration(file.data, tmp_path)
    assert abs(att["duration_secs"] - true) < 0.15
    wave = base64.b64decode(att["waveform"])
    assert 1 <= len(wave) <= 256 and max(wave) == 255 and len(set(wave)) > 3
    assert abs(len(wave) - min(256, true * 10)) <= 2
    assert str(spoken.json["message_reference"]["message_id"]) == voice["id"]
    assert spoken.response["flags"] == MessageFlags.IS_VOICE_MESSAGE


@pytest.mark.skipif(not speech_installed(), reason="piper and ffmpeg are needed")
async def test_speak_button_answers_with_a_voice_message(rig):
    fake = rig.fake
    mention = fake.message_create_mention("What is the capital of France?")
    await fake.dispatch("MESSAGE_CREATE", mention)
    answer = await rig.answered((await rig.bot_reply_to(mention["id"]))["id"])
    assert rig.components(answer["id"]) == ["confab:speak"]
    click = fake.interaction_button("confab:speak", answer)
    await fake.dispatch("INTERACTION_CREATE", click)
    cb = await rig.acked(click)
    assert cb.json == {"type": 6}
    spoken = await fake.wait_for("POST", f"/channels/{fake.channel_id}/messages",
                                 lambda r: (r.json or {}).get("flags") == MessageFlags.IS_VOICE_MESSAGE, timeout=T)
    assert spoken.status == 200 and str(spoken.json["message_reference"]["message_id"]) == answer["id"]


@contextlib.asynccontextmanager
async def server_elsewhere():
    """A file server on loopback that is not Discord's: yields its port and the paths it served."""
    hits = []

    async def elsewhere(request):
        hits.append(request.path)
        return web.Response(body=b"OggS" + bytes(100), content_type="audio/ogg")
    app = web.Application()
    app.router.add_get("/{tail:.*}", elsewhere)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield runner.addresses[0][1], hits
    finally:
        await runner.cleanup()


async def test_attachments_only_from_discord_hosts(rig):
    fake = rig.fake
    async with server_elsewhere() as (port, hits):
        voice = fake.message_create_voice(b"OggS" + bytes(100), dm=True)
        for att in voice["attachments"]:
            att["url"] = att["proxy_url"] = f"http://127.0.0.1:{port}/attachments/1/2/voice-message.ogg"
        await fake.dispatch("MESSAGE_CREATE", voice)
        refusal = await rig.bot_reply_to(voice["id"])
        assert "Discord's own file servers" in refusal["content"]
        assert hits == []


async def test_an_attachment_redirected_off_discord_is_not_followed(rig):
    fake = rig.fake
    async with server_elsewhere() as (port, hits):
        voice = fake.message_create_voice(b"OggS" + bytes(100), dm=True)
        fake.redirect_attachment(voice["attachments"][0]["id"], f"http://127.0.0.1:{port}/stolen.ogg")
        await fake.dispatch("MESSAGE_CREATE", voice)
        refusal = await rig.bot_reply_to(voice["id"])
        assert "sent me elsewhere" in refusal["content"] and "Discord's own file servers" in refusal["content"]
        assert hits == []


@pytest.mark.skipif(not speech_installed(), reason="piper and ffmpeg are needed")
async def test_an_attachment_redirected_within_discord_is_followed(rig, tmp_path):
    fake = rig.fake
    audio, seconds = spoken_ogg("What is the capital of France?", tmp_path)
    voice = fake.message_create_voice(audio, duration_secs=round(seconds, 2), dm=True)
    att = voice["attachments"][0]
    fake.redirect_attachment(att["id"], att["proxy_url"])       # the CDN sends it to its media host
    await fake.dispatch("MESSAGE_CREATE", voice)
    text = await rig.bot_reply_to(voice["id"], timeout=90)
    await rig.until(lambda: "france" in fake.messages[text["id"]]["content"].lower(), "the answer", 90)
    assert [r.status for r in fake.find("GET", f"/{att['id']}/")] == [302, 200]
