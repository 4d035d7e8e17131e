"""The live voice loop after a crash: the turn that was cut off is answered once, in the same
conversation. Two crash points: before the answer was complete (asked again from the kept
recording; the jobs the dead process left never run), and while it played (said again, not
asked again: the conversation remembers it once). The first engine stands for the process that
died: its turn is cut off mid-way and nothing after that runs; the second is a new process on
the same data folder."""
from __future__ import annotations

import asyncio
import threading

import pytest

from engine import Engine
from tests.conftest import make_settings, requires_chat_model
from tests.speech_helpers import espeak, requires_speech_tools, wer
from voice.loop import FilePlayer, VoiceLoop

pytestmark = [requires_speech_tools, requires_chat_model, pytest.mark.timeout(600)]

QUESTION = "What colour is the sky on a clear day?"


def settings_for(data, models):
    return make_settings(data, models, default_stt_model="whisper-tiny.en", voice_max_tokens=24)


async def statuses(engine, ids):
    return [(await engine.store.get_job(i))["status"] for i in ids]


async def test_a_turn_cut_off_before_its_answer_is_asked_again_from_its_recording(tmp_path, shared_models_dir):
    settings = settings_for(tmp_path, shared_models_dir)
    recording = espeak(QUESTION, tmp_path / "q.wav").read_bytes()
    gate = threading.Event()

    def never(name, device):       # the dead process never got as far as a model
        gate.wait(60)
        raise RuntimeError("stopped")

    first = Engine(settings, load=never, gpu_total=None)
    await first.start(resume=False)
    loop = VoiceLoop(first, FilePlayer(), user="alice", keep_turns=True)
    cut = asyncio.create_task(loop.turn(recording))
    async def queued():
        while not first.active_jobs():
            await asyncio.sleep(0.05)
    await asyncio.wait_for(queued(), 30)
    left_behind = [h.id for h in first.active_jobs()]
    cut.cancel()                                  # the crash: nothing of the turn goes on
    await asyncio.gather(cut, return_exceptions=True)
    first.store.close()                           # as a kill leaves the store: no more writes
    gate.set()

    second = Engine(settings, gpu_total=None)
    await second.start()                          # resuming, as `confab run` does: yet a live
    try:                                          # turn's jobs are not run as they were
        assert not second.active_jobs()
        again = VoiceLoop(second, FilePlayer(), user="alice", keep_turns=True)
        resumed = await asyncio.wait_for(again.resume(), 300)
        assert len(resumed) == 1
        turn = resumed[0]
        assert not turn.error and not turn.interrupted
        assert wer(QUESTION, turn.transcript) <= 0.3
        assert turn.answer and turn.audio.duration_s > 0.5
        assert again.conversation == loop.conversation         # the same conversation goes on
        assert [r for r, _ in await second.history(again.conversation)] == ["user", "assistant"]
        assert await statuses(second, left_behind) == ["cancelled"] * len(left_behind)
        assert await again.resume() == []                      # answered once
        assert not list((tmp_path / "uploads" / "voice").iterdir())
    finally:
        await second.close()


async def test_a_turn_cut_off_while_its_answer_played_is_said_again_not_asked_again(tmp_path, shared_models_dir):
    settings = settings_for(tmp_path, shared_models_dir)
    recording = espeak(QUESTION, tmp_path / "q.wav").read_bytes()
    first = Engine(settings, gpu_total=None)
    await first.start(resume=False)
    player = FilePlayer(realtime=True)            # drain() lasts as long as the audio would
    loop = VoiceLoop(first, player, user="bob", keep_turns=True)
    cut = asyncio.create_task(loop.turn(recording))
    async def playing():     # the answer is complete (kept with the turn) and being heard
        import time
        while not (player.chunks and any(turn.get("answer") for _, turn in
                                         await first.open_events("voice", time.time() + 1))):
            await asyncio.sleep(0.05)
    try:
        await asyncio.wait_for(playing(), 300)
        history = await first.history(loop.conversation)
        assert [r for r, _ in history] == ["user", "assistant"]     # complete and remembered
        cut.cancel()
        await asyncio.gather(cut, return_exceptions=True)
    finally:
        await first.close()

    second = Engine(settings, gpu_total=None)
    await second.start(resume=False)
    try:
        again = VoiceLoop(second, FilePlayer(), user="bob", keep_turns=True)
        resumed = await asyncio.wait_for(again.resume(), 300)
        assert len(resumed) == 1 and resumed[0].answer == history[1][1]
        assert resumed[0].audio.duration_s > 0.5
        kinds = [(await second.store.get_job(j))["kind"] for j in resumed[0].jobs]
        assert kinds == ["speak"]                                  # said, not asked again
        assert await second.history(again.conversation) == history
        assert await again.resume() == []
    finally:
        await second.close()
