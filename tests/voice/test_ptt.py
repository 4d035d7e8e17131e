"""push_to_talk end to end: a key the test holds, a microphone that hears real speech (espeak-ng
and Piper), real faster-whisper, the real chat model and Piper through the real engine.
Nothing here times anything: every wait is for an event, bounded by wait_for."""
from __future__ import annotations

import asyncio
import io
import os

import pytest
import pytest_asyncio

from engine import Engine, Origin
from engine.media.audio import Pcm, decode, levels
from engine.work.speech import submit_speech
from tests.conftest import make_settings, requires_chat_model
from tests.speech_helpers import espeak, requires_speech_tools, wer
from tests.voice.fakes import ClipMicrophone, ScriptedKeys, Speaker
from voice.keys import EnterKeys
from voice.loop import VoiceLoop
from voice.ptt import push_to_talk

pytestmark = [requires_speech_tools, requires_chat_model, pytest.mark.asyncio(loop_scope="module")]

NAME = "My name is Alice and I live in Paris."
STORY = "Tell me a long story about a dragon and a knight."
SUM = "What is the capital of France?"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def engine(tmp_path_factory, shared_models_dir):
    # one job at a time (the default): a long answer's later sentences wait as queued speak jobs
    e = Engine(make_settings(tmp_path_factory.mktemp("data"), shared_models_dir,
                             default_stt_model="whisper-base", voice_max_tokens=120))
    await e.start(resume=False)
    yield e
    await e.close()


def heard(path) -> Pcm:
    """A recording as the microphone would deliver it: 16 kHz mono 16-bit."""
    return decode(path.read_bytes(), 25 * 2**20, 60, 30)


async def piper_says(engine, text: str) -> Pcm:
    handle = await submit_speech(engine, text, Origin(platform="test", user="mic"),
                                 response_format="wav")
    return decode((await asyncio.wait_for(handle.result(), 120)).audio, 25 * 2**20, 60, 30)


class Run:
    """push_to_talk as a task, its turns as they finish, and its printed words."""

    def __init__(self, loop: VoiceLoop, mic, keys):
        self.out = io.StringIO()
        self.turns: asyncio.Queue = asyncio.Queue()
        self.task = asyncio.ensure_future(push_to_talk(loop, mic, keys, self.out, self.turns.put_nowait))

    async def next_turn(self):
        return await asyncio.wait_for(self.turns.get(), 240)

    async def finish(self):
        return await asyncio.wait_for(self.task, 60)


async def test_holding_the_key_records_and_letting_go_sends(engine, tmp_path):
    clip = heard(espeak(NAME, tmp_path / "name.wav"))
    mic = ClipMicrophone([(clip, 0.0)])        # no silence after it: only letting go can send it
    keys = ScriptedKeys(hold=True)
    loop = VoiceLoop(engine, Speaker(), user="alice")
    run = Run(loop, mic, keys)
    keys.press()
    await mic.all_heard(0)
    assert not mic.endpointer.ended            # so the endpointer did not end it
    keys.release()
    turn = await run.next_turn()
    keys.quit()
    results = await run.finish()
    assert results == [turn]
    assert turn.ended_by == "key" and not turn.interrupted and not turn.error
    assert wer(NAME, turn.transcript) <= 0.2, turn.transcript
    assert turn.answer.strip()
    assert turn.audio.duration_s > 0.5 and levels(turn.audio)[0] > 1000
    assert {engine.handle(j).priority for j in turn.jobs} == {0}
    printed = run.out.getvalue()
    assert "Hold Right Ctrl to talk" in printed and f"confab: {turn.answer.strip()[:20]}" in printed
    assert len(await engine.history(loop.conversation)) == 2


async def test_a_pause_in_speech_sends_the_turn_with_the_key_still_held(engine, tmp_path):
    clip = heard(espeak(SUM, tmp_path / "sum.wav"))
    mic = ClipMicrophone([(clip, 2.0)])
    keys = ScriptedKeys(hold=True)
    run = Run(VoiceLoop(engine, Speaker(), user="bob"), mic, keys)
    keys.press()                               # and never let go during the turn
    turn = await run.next_turn()
    keys.release()
    keys.quit()
    await run.finish()
    assert turn.ended_by == "silence" and not turn.interrupted
    assert wer(SUM, turn.transcript) <= 0.2, turn.transcript
    assert turn.answer.strip() and turn.audio.duration_s > 0.5
    assert "(you paused, so that is sent)" in run.out.getvalue()


async def test_barge_in_stops_the_answer_cancels_its_speech_and_records_the_next_turn(engine, tmp_path):
    story = heard(espeak(STORY, tmp_path / "story.wav"))
    follow_up = await piper_says(engine, SUM)
    mic = ClipMicrophone([(story, 0.0), (follow_up, 2.0)])
    keys = ScriptedKeys(hold=True)
    speaker = Speaker(on_play=lambda n: keys.press() if mic.turns == 1 and n == 1 else None)
    loop = VoiceLoop(engine, speaker, user="carol")
    run = Run(loop, mic, keys)
    keys.press()
    await mic.all_heard(0)
    keys.release()
    first = await run.next_turn()              # the key went down again at its first sentence
    stopped_at = list(speaker.stopped_at)
    second = await run.next_turn()             # still held: the pause after it sent it
    keys.release()
    keys.quit()
    await run.finish()

    assert first.interrupted and first.ended_by == "key"
    assert stopped_at == [1]                   # playback stopped after the one sentence heard
    assert 0 < first.audio.duration_s
    speak = [engine.handle(j) for j in first.jobs if engine.handle(j).job.kind == "speak"]
    chat = [engine.handle(j) for j in first.jobs if engine.handle(j).job.kind == "chat"]
    assert all(engine.handle(j).done for j in first.jobs)
    # the rest of the answer was stopped: the speech of its later sentences, and (when the key
    # came before the chat model had written them: it runs beside the speech now) the answer
    assert all(h.status == "cancelled" for h in speak[1:]), [(h.status, h.job.text[:30]) for h in speak]
    assert speak[1:] or chat[0].status == "cancelled", (chat[0].status, [h.job.text for h in speak])
    assert not engine.jobs_of(loop.origin.user_key)

    assert mic.turns == 2 and second.ended_by == "silence" and not second.interrupted
    assert wer(SUM, second.transcript) <= 0.2, second.transcript
    assert second.answer.strip() and second.audio.duration_s > 0.5
    assert "(interrupted)" in run.out.getvalue()
    # the interrupted turn is not remembered; the one answered in full is
    assert len(await engine.history(loop.conversation)) == 2


async def test_enter_starts_and_a_pause_sends_over_a_pipe(engine, tmp_path):
    clip = heard(espeak(NAME, tmp_path / "name.wav"))
    mic = ClipMicrophone([(clip, 2.0)])
    r, w = os.pipe()
    with os.fdopen(r, "r") as stdin, os.fdopen(w, "w") as typed:
        keys = EnterKeys(stdin)
        run = Run(VoiceLoop(engine, Speaker(), user="dave"), mic, keys)
        typed.write("\n")
        typed.flush()
        turn = await run.next_turn()
        typed.close()                          # Ctrl-D
        await run.finish()
    assert turn.ended_by == "silence" and wer(NAME, turn.transcript) <= 0.2
    assert "[Enter] to talk" in run.out.getvalue()


async def test_enter_again_sends_over_a_pipe(engine, tmp_path):
    clip = heard(espeak(SUM, tmp_path / "sum.wav"))
    mic = ClipMicrophone([(clip, 0.0)])
    r, w = os.pipe()
    with os.fdopen(r, "r") as stdin, os.fdopen(w, "w") as typed:
        run = Run(VoiceLoop(engine, Speaker(), user="erin"), mic, EnterKeys(stdin))
        typed.write("\n")
        typed.flush()
        await mic.all_heard(0)
        typed.write("\n")
        typed.flush()
        turn = await run.next_turn()
        typed.close()
        await run.finish()
    assert turn.ended_by == "key" and wer(SUM, turn.transcript) <= 0.2


async def test_a_turn_without_speech_is_not_sent():
    mic = ClipMicrophone([(Pcm(b"\x00\x00" * 16_000, 16_000), 0.0)])
    keys = ScriptedKeys(hold=True)
    run = Run(VoiceLoop(None, Speaker(), user="frank"), mic, keys)    # never reaches an engine
    keys.press()
    await mic.all_heard(0)
    keys.release()
    keys.quit()
    assert await run.finish() == []
    assert "(no speech heard; nothing sent)" in run.out.getvalue()
