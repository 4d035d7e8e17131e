"""/v1/realtime through the official openai client's realtime connection (openai[realtime]),
against Confab on loopback: espeak-ng speech in PCM16 24 kHz, real Whisper tiny.en, the SmolLM2
chat model on its runner, and Piper. A turn found by server VAD is transcribed, answered and
spoken; the session is class 0 with its own conversation key; it survives malformed events and
an oversized buffer; barge-in cancels and truncates; a client that vanishes leaves nothing running."""
from __future__ import annotations

import asyncio
import audioop
import base64
import json

import openai
import pytest
import pytest_asyncio
import websockets
from openai import AsyncOpenAI

from engine import Engine
from engine.media import audio
from tests.conftest import make_settings, requires_chat_model
from tests.speech_helpers import espeak, requires_speech_tools, serve, wer

pytestmark = [requires_speech_tools, requires_chat_model, pytest.mark.asyncio(loop_scope="module"),
              pytest.mark.timeout(300)]

KEY = "realtime-test-key"
QUESTION = "What is the capital of France?"
STORY = "Tell me a long story about a dragon and a knight."
CHUNK = 4800 * 2                 # 100 ms of PCM16 at 24 kHz


def pcm24(path) -> bytes:
    """espeak-ng speech as PCM16 24 kHz, with quiet before (the VAD's noise floor) and after."""
    speech = audio.decode(path.read_bytes(), 2**26, 60, 30, rate=24_000)
    return (audio.silence(0.6, 24_000) + speech + audio.silence(1.2, 24_000)).data


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server(tmp_path_factory, shared_models_dir):
    settings = make_settings(tmp_path_factory.mktemp("data"), shared_models_dir, api_keys=(KEY,),
                             default_stt_model="whisper-tiny.en", voice_max_tokens=48,
                             max_audio_seconds=20)
    engine = Engine(settings)
    await engine.start(resume=False)
    async with serve(engine) as base:
        async with AsyncOpenAI(base_url=base, api_key=KEY, max_retries=0, timeout=120) as client:
            yield engine, client, base
    await engine.close()


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    folder = tmp_path_factory.mktemp("speech")
    return {"question": pcm24(espeak(QUESTION, folder / "q.wav")),
            "stop": pcm24(espeak("Wait, stop please.", folder / "stop.wav"))}


async def events_until(conn, done, timeout: float = 150) -> list:
    """Server events, up to and including the first for which done(event) is true."""
    out = []

    async def read():
        async for ev in conn:
            out.append(ev)
            if done(ev):
                return
    await asyncio.wait_for(read(), timeout)
    return out


def of(events, kind: str) -> list:
    return [e for e in events if e.type == kind]


async def say(conn, pcm: bytes) -> None:
    for i in range(0, len(pcm), CHUNK):
        await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[i:i + CHUNK]).decode())


def session_jobs(engine, session_id: str) -> list:
    return [h for h in engine._handles.values() if h.job.origin.channel == session_id]


async def test_a_spoken_turn_is_heard_answered_and_spoken(server, speech):
    engine, client, _ = server
    async with client.realtime.connect(model="gpt-realtime") as conn:
        created = await conn.recv()
        assert created.type == "session.created"
        await conn.session.update(session={"type": "realtime", "instructions": "You are a helpful assistant.",
                                           "audio": {"input": {"transcription": {"model": "whisper-1"}}}})
        updated = await conn.recv()
        assert updated.type == "session.updated"
        await say(conn, speech["question"])
        events = await events_until(conn, lambda e: e.type == "response.done")
        kinds = [e.type for e in events]
        assert kinds.index("input_audio_buffer.speech_started") < kinds.index("input_audio_buffer.speech_stopped") \
            < kinds.index("input_audio_buffer.committed") < kinds.index("response.created")
        heard = of(events, "conversation.item.input_audio_transcription.completed")
        if not heard:   # transcription may finish after the response's first events
            heard = of(await events_until(conn, lambda e: "transcription.completed" in e.type, 30),
                       "conversation.item.input_audio_transcription.completed")
        assert wer(QUESTION, heard[0].transcript) <= 0.4, heard[0].transcript
        done = of(events, "response.done")[0]
        assert done.response.status == "completed"
        pcm = b"".join(base64.b64decode(e.delta) for e in of(events, "response.output_audio.delta"))
        assert len(pcm) / 2 / 24_000 > 0.5 and audio.levels(audio.Pcm(pcm, 24_000))[0] > 1000
        said = "".join(e.delta for e in of(events, "response.output_audio_transcript.delta"))
        assert said.strip() and said == of(events, "response.output_audio_transcript.done")[0].transcript
        assert done.response.output[0].content[0].transcript == said
        # class 0 (live voice) of the key's caller, in the session's own conversation
        jobs = session_jobs(engine, created.session.id)
        assert {h.job.kind for h in jobs} >= {"transcribe", "chat", "speak"}
        assert {h.priority for h in jobs} == {0}
        assert all(h.job.origin.user.startswith("key-") for h in jobs)
        chat = [h.job for h in jobs if h.job.kind == "chat"]
        assert chat[0].conversation == f"realtime:{chat[0].origin.user}:{created.session.id}"

        # a written question next, answered in text, with the spoken turn in its context
        await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "Say that again in one word."}]})
        await conn.response.create(response={"output_modalities": ["text"]})
        events = await events_until(conn, lambda e: e.type == "response.done")
        text = "".join(e.delta for e in of(events, "response.output_text.delta"))
        assert of(events, "response.done")[0].response.status == "completed" and text.strip()
        chat = [h.job for h in session_jobs(engine, created.session.id) if h.job.kind == "chat"]
        assert len(chat) == 2 and chat[1].conversation == chat[0].conversation
        context = " ".join(m.content for m in chat[1].messages)
        assert heard[0].transcript in context and said in context


async def test_the_session_survives_malformed_events_and_an_oversized_buffer(server):
    engine, client, _ = server
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await conn.recv()
        await conn.send_raw("{this is not json")
        await conn.send_raw(json.dumps({"type": "no.such.event", "event_id": "ev1"}))
        await conn.send_raw(json.dumps({"type": "input_audio_buffer.append", "audio": "@@not base64@@"}))
        await conn.session.update(session={"type": "realtime", "audio": {"output": {"voice": "nobody"}}})
        errors = [await conn.recv() for _ in range(4)]
        assert [e.type for e in errors] == ["error"] * 4
        assert errors[0].error.code == "invalid_json"
        assert errors[1].error.code == "invalid_event" and errors[1].error.event_id == "ev1"
        assert errors[2].error.param == "audio"
        assert errors[3].error.param == "session.audio.output.voice" and "alloy" in errors[3].error.message
        # it goes on: a good update is taken
        await conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": None}}})
        updated = await conn.recv()
        assert updated.type == "session.updated" and updated.session.audio.input.turn_detection is None
        # 20 s of audio fit (CONFAB_MAX_AUDIO_SECONDS=20); a 21st second is refused with words
        second = audio.silence(1.0, 24_000).data
        for _ in range(20):
            await conn.input_audio_buffer.append(audio=base64.b64encode(second).decode())
        await conn.input_audio_buffer.append(audio=base64.b64encode(second).decode())
        refused = await asyncio.wait_for(conn.recv(), 30)
        assert refused.type == "error" and refused.error.code == "input_audio_buffer_too_large"
        assert "21.0 s" in refused.error.message and "limit is 20 s" in refused.error.message
        await conn.input_audio_buffer.clear()
        assert (await asyncio.wait_for(conn.recv(), 30)).type == "input_audio_buffer.cleared"
        await conn.response.cancel()
        nothing = await asyncio.wait_for(conn.recv(), 30)
        assert nothing.type == "error" and nothing.error.code == "response_cancel_not_active"


async def test_a_wrong_key_is_refused(server):
    _, _, base = server
    async with AsyncOpenAI(base_url=base, api_key="wrong", max_retries=0) as other:
        with pytest.raises((websockets.exceptions.InvalidStatus, openai.OpenAIError)) as info:
            async with other.realtime.connect(model="gpt-realtime") as conn:
                await conn.recv()
    assert "401" in str(info.value)


async def test_barge_in_cancels_the_answer_and_keeps_what_was_heard(server, speech):
    engine, client, _ = server
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await conn.recv()
        await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": STORY}]})
        await conn.response.create()
        first = await events_until(conn, lambda e: e.type == "response.output_audio.delta")
        item_id = of(first, "response.output_item.added")[0].item.id
        await say(conn, speech["stop"])
        events = await events_until(conn, lambda e: e.type == "response.done")
        kinds = [e.type for e in events]
        assert "input_audio_buffer.speech_started" in kinds
        done = of(events, "response.done")[0]
        assert done.response.status == "cancelled" and done.response.status_details.reason == "turn_detected"
        truncated = of(events, "conversation.item.truncated")
        assert truncated and truncated[0].item_id == item_id
        await conn.conversation.item.retrieve(item_id=item_id)
        kept = (await events_until(conn, lambda e: e.type == "conversation.item.retrieved")
                )[-1].item.content[0].transcript
        spoken = "".join(e.delta for e in of(first + events, "response.output_audio_transcript.delta"))
        assert spoken.startswith(kept)            # what was heard, not more than was said
        # the interruption is the next turn: it is heard and answered
        events = await events_until(conn, lambda e: e.type == "response.done")
        assert of(events, "response.done")[0].response.status == "completed"


async def test_a_client_that_vanishes_mid_answer_leaves_nothing_running(server):
    engine, client, _ = server
    async with client.realtime.connect(model="gpt-realtime") as conn:
        created = await conn.recv()
        await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": STORY}]})
        await conn.response.create()
        await events_until(conn, lambda e: e.type == "response.output_audio.delta")
        await conn.close()
    jobs = session_jobs(engine, created.session.id)

    async def settled():
        while any(not h.done for h in session_jobs(engine, created.session.id)):
            await asyncio.sleep(0.1)
    await asyncio.wait_for(settled(), 60)
    assert "cancelled" in [h.status for h in session_jobs(engine, created.session.id)]
    assert {h.job.kind for h in jobs} >= {"chat", "speak"}
    assert not engine.jobs_of(jobs[0].job.origin.user_key)


async def test_g711_answers(server):
    engine, client, _ = server
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await conn.recv()
        await conn.session.update(session={"type": "realtime", "audio": {"output": {"format": {"type": "audio/pcmu"}}}})
        await conn.recv()
        await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": QUESTION}]})
        await conn.response.create()
        events = await events_until(conn, lambda e: e.type == "response.done")
        ulaw = b"".join(base64.b64decode(e.delta) for e in of(events, "response.output_audio.delta"))
        pcm = audio.Pcm(audioop.ulaw2lin(ulaw, 2), 8000)
        assert pcm.duration_s > 0.5 and audio.levels(pcm)[0] > 1000
