"""The voice-note pipeline on real models: transcribe -> chat -> speak, each stage its own job with
the origin's priority; cancelling stops whichever stage is queued or running."""
from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio

from engine import Engine, Origin, Token
from engine.errors import BadMedia, JobCancelled
from engine.flows.voice_note import StageStarted, Transcript, voice_note
from engine.work.speech import SpeechChunk
from tests.conftest import make_settings, requires_chat_model
from tests.speech_helpers import espeak, probe_seconds, requires_speech_tools, wer

pytestmark = [requires_speech_tools, requires_chat_model, pytest.mark.asyncio(loop_scope="module")]

QUESTION = "What is the capital of France?"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def engine(tmp_path_factory, shared_models_dir):
    settings = make_settings(tmp_path_factory.mktemp("data"), shared_models_dir,
                             default_stt_model="whisper-tiny.en", voice_max_tokens=40)
    e = Engine(settings)
    await e.start(resume=False)
    yield e
    await e.close()


@pytest.fixture(scope="module")
def question(tmp_path_factory):
    return espeak(QUESTION, tmp_path_factory.mktemp("q") / "q.wav").read_bytes()


async def until(note, predicate, timeout=120):
    async def scan():
        async for ev in note:
            if predicate(ev):
                return ev
    return await asyncio.wait_for(scan(), timeout)


async def test_voice_note_transcribes_answers_and_speaks(engine, question):
    origin = Origin(platform="slack", user="U1", channel="C1")
    note = await voice_note(engine, question, origin, conversation="slack:C1:t1", response_format="ogg")
    events = [ev async for ev in note]
    result = await asyncio.wait_for(note.result(), 120)
    assert wer(QUESTION, result.transcript) <= 0.2, result.transcript
    assert result.answer.strip() and result.format == "ogg"
    assert probe_seconds(result.audio) == pytest.approx(result.duration_s, abs=0.15) and result.duration_s > 0.5
    stages = [ev.stage for ev in events if isinstance(ev, StageStarted)]
    assert stages == ["transcribe", "chat", "speak"]
    assert any(isinstance(ev, Transcript) for ev in events)
    assert "".join(ev.text for ev in events if isinstance(ev, Token)) == result.answer
    assert any(isinstance(ev, SpeechChunk) for ev in events)
    # each stage is a job of its own, with the origin's priority (a channel: class 1)
    handles = [engine.handle(j) for j in result.jobs]
    assert [h.job.kind for h in handles] == ["transcribe", "chat", "speak"]
    assert {h.priority for h in handles} == {1}
    assert await engine.history("slack:C1:t1") == [("user", result.transcript), ("assistant", result.answer)]


async def test_a_direct_message_runs_every_stage_in_class_0(engine, question):
    note = await voice_note(engine, question, Origin(platform="discord", user="7", is_dm=True),
                            response_format="wav", stream_sentences=True)
    result = await asyncio.wait_for(note.result(), 120)
    assert {engine.handle(j).priority for j in result.jobs} == {0}
    assert [engine.handle(j).job.kind for j in result.jobs][:2] == ["transcribe", "chat"]


async def test_cancel_while_transcribing(engine, question):
    note = await voice_note(engine, question, Origin())
    await until(note, lambda ev: isinstance(ev, StageStarted))
    assert await note.cancel()
    with pytest.raises(JobCancelled):
        await asyncio.wait_for(note.result(), 60)
    assert [h.job.kind for h in note.handles] == ["transcribe"]
    assert note.handles[0].status == "cancelled"


async def test_cancel_while_the_answer_is_written(engine, question):
    note = await voice_note(engine, question, Origin())
    await until(note, lambda ev: isinstance(ev, Token))
    await note.cancel()
    with pytest.raises(JobCancelled):
        await asyncio.wait_for(note.result(), 60)
    kinds = [h.job.kind for h in note.handles]
    assert kinds == ["transcribe", "chat"] and note.handles[1].status == "cancelled"


async def test_cancel_while_speaking(engine, question):
    note = await voice_note(engine, question, Origin())
    await until(note, lambda ev: isinstance(ev, StageStarted) and ev.stage == "speak")
    await note.cancel()
    with pytest.raises(JobCancelled):
        await asyncio.wait_for(note.result(), 60)
    assert note.handles[-1].job.kind == "speak" and note.handles[-1].status == "cancelled"
    assert not [h for h in engine.active_jobs()]


async def test_bad_audio_fails_the_pipeline_clearly(engine):
    note = await voice_note(engine, b"not audio at all" * 10, Origin())
    with pytest.raises(BadMedia, match="not audio"):
        await asyncio.wait_for(note.result(), 30)
    assert note.handles == []
