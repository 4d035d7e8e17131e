"""The push-to-talk loop from files, end to end on real models: answers streamed sentence by
sentence, memory across turns, barge-in, `confab voice` headless, and no audio device needed."""
from __future__ import annotations

import argparse
import asyncio
import io

import pytest
import pytest_asyncio

from engine import Engine
from engine.media.audio import decode, levels, read_wav
from engine.media.vad import Endpointer
from engine.work.speech import SpeechChunk
from tests.conftest import make_settings, requires_chat_model
from tests.speech_helpers import espeak, requires_speech_tools, wer
from voice.cli import run_voice
from voice.loop import FilePlayer, VoiceLoop

pytestmark = [requires_speech_tools, requires_chat_model, pytest.mark.asyncio(loop_scope="module")]


def settings_for(data, models):
    return make_settings(data, models, default_stt_model="whisper-tiny.en", voice_max_tokens=40)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def engine(tmp_path_factory, shared_models_dir):
    e = Engine(settings_for(tmp_path_factory.mktemp("data"), shared_models_dir))
    await e.start(resume=False)
    yield e
    await e.close()


@pytest.fixture(scope="module")
def turns(tmp_path_factory):
    folder = tmp_path_factory.mktemp("turns")
    espeak("My name is Alice and I live in Paris.", folder / "01-name.wav")
    espeak("Tell me about the city where I live.", folder / "02-city.wav")
    return folder


async def test_two_turns_remember_each_other(engine, turns):
    loop = VoiceLoop(engine, FilePlayer(), user="alice")
    first = await asyncio.wait_for(loop.turn((turns / "01-name.wav").read_bytes()), 180)
    assert not first.interrupted and not first.error
    assert wer("My name is Alice and I live in Paris.", first.transcript) <= 0.3
    assert first.answer and first.audio.duration_s > 0.5
    assert first.first_audio_s is not None and first.first_audio_s <= first.full_audio_s
    second = await asyncio.wait_for(loop.turn((turns / "02-city.wav").read_bytes()), 180)
    assert second.answer and not second.interrupted
    chat = next(engine.handle(j).job for j in second.jobs if engine.handle(j).job.kind == "chat")
    said = " ".join(m.content for m in chat.messages)
    assert "Alice" in said and first.answer in said       # the first turn is in the second's context
    # the live voice loop is class 0, every stage of every turn
    assert {engine.handle(j).priority for j in first.jobs + second.jobs} == {0}
    assert len(await engine.history(loop.conversation)) == 4


async def test_barge_in_stops_playback_and_cancels_the_rest(engine, tmp_path):
    question = espeak("Tell me a long story about a dragon and a knight.", tmp_path / "story.wav").read_bytes()
    player = FilePlayer()
    loop = VoiceLoop(engine, player, user="bob")
    heard = []

    def on_event(ev):
        if isinstance(ev, SpeechChunk):
            heard.append(ev)
            if len(heard) == 1:
                asyncio.get_running_loop().create_task(loop.barge_in())

    loop.on_event = on_event
    result = await asyncio.wait_for(loop.turn(question), 180)
    assert result.interrupted and player.stopped
    assert len(heard) >= 1
    assert all(engine.handle(j).done for j in result.jobs)
    assert not engine.jobs_of(loop.origin.user_key)
    assert [engine.handle(j).status for j in result.jobs].count("cancelled") >= 1
    # the loop goes on: the next turn is answered in full
    loop.on_event = lambda ev: None
    again = await asyncio.wait_for(loop.turn(question), 180)
    assert not again.interrupted and again.answer and not player.stopped


async def test_confab_voice_one_file(tmp_path, turns, shared_models_dir):
    out = io.StringIO()
    args = argparse.Namespace(input=str(turns / "01-name.wav"), output=str(tmp_path / "answer.wav"),
                              input_dir=None, output_dir=None, stt_model=None, tts_model=None, voice=None)
    code = await asyncio.wait_for(run_voice(settings_for(tmp_path / "d1", shared_models_dir), args,
                                            "carol", out), 240)
    assert code == 0, out.getvalue()
    answer = read_wav(tmp_path / "answer.wav")
    assert answer.duration_s > 0.5 and levels(answer)[0] > 1000
    assert "you: My name is Alice" in out.getvalue() and "confab: " in out.getvalue()


async def test_confab_voice_over_a_folder(tmp_path, turns, shared_models_dir):
    out = io.StringIO()
    args = argparse.Namespace(input=None, output=None, input_dir=str(turns), output_dir=str(tmp_path / "answers"),
                              stt_model=None, tts_model=None, voice=None)
    code = await asyncio.wait_for(run_voice(settings_for(tmp_path / "d2", shared_models_dir), args,
                                            "dave", out), 300)
    assert code == 0, out.getvalue()
    assert sorted(p.name for p in (tmp_path / "answers").iterdir()) == ["01-name.wav", "02-city.wav"]
    assert out.getvalue().count("confab: ") == 2


async def test_without_a_sound_card_it_says_to_use_files(tmp_path, shared_models_dir, capsys):
    args = argparse.Namespace(input=None, output=None, input_dir=None, output_dir=None,
                              stt_model=None, tts_model=None, voice=None)
    import voice.devices as devices

    def missing():
        from engine.errors import BackendMissing
        raise BackendMissing("sounddevice (with PortAudio: no device)", "voice")

    original = devices._sounddevice
    devices._sounddevice = missing
    try:
        code = await run_voice(settings_for(tmp_path / "d3", shared_models_dir), args, "erin", io.StringIO())
    finally:
        devices._sounddevice = original
    assert code == 2
    assert "--input and --output" in capsys.readouterr().err


async def test_endpointer_ends_the_turn_after_speech_then_silence(tmp_path):
    speech = decode(espeak("Hello there, how are you?", tmp_path / "e.wav").read_bytes(),
                    25 * 2**20, 60, 30)
    quiet = b"\x00\x00" * 16000
    ep = Endpointer(silence_s=0.6)
    assert not ep.feed(quiet)                       # silence before speech never ends a turn
    assert not ep.feed(speech.data[: len(speech.data) // 2])
    ended_at = None
    rest = speech.data[len(speech.data) // 2:] + quiet
    for i in range(0, len(rest), 960):
        if ep.feed(rest[i:i + 960]):
            ended_at = i
            break
    assert ep.heard_speech and ended_at is not None
    assert ended_at >= len(speech.data) // 2 - 1920   # not before the speech was over
    assert Endpointer(max_s=0.5).feed(b"\x00\x00" * 16000)   # and never past max_s
