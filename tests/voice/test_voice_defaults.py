"""The push-to-talk loop as a desk gets it out of the box: real speech (espeak-ng) heard by the
default Whisper, answered by the chat model at its own sampling with the voice loop's default
answer length (200 tokens), the history window of 20 messages and the automatic thread count,
and spoken by the default Piper voice. One session, one question after another, as a person at
the desk asks them. What it says is judged by the rate over several questions, both as text and
as heard: the spoken answer is transcribed back."""
from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio

from engine import Engine, Origin
from engine.media.audio import decode, wav_bytes
from engine.work.speech import submit_transcription
from tests.conftest import make_settings, requires_chat_model
from tests.defaults import BAR, CAPITALS, rate
from tests.speech_helpers import espeak, requires_speech_tools
from voice.loop import FilePlayer, VoiceLoop

pytestmark = [requires_speech_tools, requires_chat_model, pytest.mark.asyncio(loop_scope="module"),
              pytest.mark.timeout(900)]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def engine(tmp_path_factory, shared_models_dir):
    e = Engine(make_settings(tmp_path_factory.mktemp("voice-defaults"), shared_models_dir))
    await e.start(resume=False)
    yield e
    await e.close()


async def test_spoken_questions_with_the_defaults_are_answered_aloud_with_the_capitals(engine, tmp_path):
    s = engine.settings
    assert (s.voice_max_tokens, s.threads, s.history_messages, s.default_stt_model, s.default_tts_model) == \
        (200, 0, 20, "", "")
    loop = VoiceLoop(engine, FilePlayer(), user="desk")
    turns = []
    for i, (country, _) in enumerate(CAPITALS):
        question = espeak(f"What is the capital of {country}?", tmp_path / f"q{i}.wav").read_bytes()
        turn = await asyncio.wait_for(loop.turn(question), 240)
        assert not turn.error and not turn.interrupted, turn.error
        turns.append(turn)
    capitals = [c for _, c in CAPITALS]
    # heard: the default Whisper got the country from espeak-ng's voice
    assert rate([t.transcript for t in turns], [c for c, _ in CAPITALS]) >= BAR, [t.transcript for t in turns]
    # said: the chat model's answer, at its own defaults
    assert rate([t.answer for t in turns], capitals) >= BAR, [t.answer for t in turns]
    # spoken: what the person hears, Piper's audio transcribed back by Whisper
    heard_back = []
    for turn in turns:
        assert turn.audio.duration_s > 0.5
        pcm = decode(wav_bytes(turn.audio), 25 * 2**20, 600, 30)
        handle = await submit_transcription(engine, pcm, Origin(platform="test", user="ear"))
        heard_back.append((await asyncio.wait_for(handle.result(), 120)).text)
    assert rate(heard_back, capitals) >= BAR, heard_back
    assert len(await engine.history(loop.conversation)) == 2 * len(CAPITALS)     # all in one session
