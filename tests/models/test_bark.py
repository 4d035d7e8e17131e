"""Bark through Confab's own path, on a tiny random-weight Bark of the real architecture built
here (no hub): registered like a user's model, loaded by the engine's loader, spoken sentence by
sentence into every format, cancelled midway; and the fast voice taking over when Bark cannot."""
from __future__ import annotations

import importlib.util

import pytest
import pytest_asyncio

from engine import Engine, Origin
from engine.errors import BadRequest, JobCancelled
from engine.work.speech import SpeechChunk, map_voice, pick_tts, submit_speech
from models.registry import Registry
from tests.conftest import make_settings
from tests.speech_helpers import build_tiny_bark, probe_seconds, requires_speech_tools

pytestmark = [requires_speech_tools, pytest.mark.asyncio(loop_scope="module"),
              pytest.mark.skipif(importlib.util.find_spec("transformers") is None
                                 or importlib.util.find_spec("torch") is None,
                                 reason="Bark needs transformers and torch (confab-bot[bark])")]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def engine(tmp_path_factory, shared_models_dir):
    data = tmp_path_factory.mktemp("data")
    folder = build_tiny_bark(tmp_path_factory.mktemp("weights") / "tiny-bark")
    settings = make_settings(data, shared_models_dir, threads=2)
    model = Registry(settings.data_path, settings.models_path).add(folder, name="tiny-bark")
    assert (model.kind, model.fmt) == ("tts", "bark")
    e = Engine(settings)
    await e.start(resume=False)
    yield e
    await e.close()


@pytest.mark.parametrize("fmt, args", [("wav", ()), ("mp3", ()), ("opus", ()), ("flac", ()),
                                       ("aac", ()), ("pcm", ("-f", "s16le", "-ar", "24000", "-ac", "1"))])
async def test_bark_speaks_sentence_by_sentence_in_every_format(engine, fmt, args):
    handle = await submit_speech(engine, "hello there. how are you?", Origin(), model="tiny-bark",
                                 voice="alloy", response_format=fmt)
    chunks = [ev async for ev in handle if isinstance(ev, SpeechChunk)]
    result = await handle.result()
    assert result.model == "tiny-bark" and result.note == "" and result.format == fmt
    assert [c.text for c in chunks] == ["hello there.", "how are you?"]
    assert all(c.sample_rate == 24_000 and len(c.pcm) > 0 for c in chunks)
    expected = sum(len(c.pcm) for c in chunks) / 2 / 24_000 + 0.2
    assert result.duration_s == pytest.approx(expected, abs=0.01)
    assert probe_seconds(result.audio, args) == pytest.approx(expected, abs=0.15)
    assert engine.handle(handle.id).device == "cpu"


async def test_cancelling_bark_midway(engine):
    text = " ".join(f"sentence number {i} is here." for i in range(12))
    handle = await submit_speech(engine, text, Origin(), model="tiny-bark", response_format="wav")
    seen = 0
    async for ev in handle:
        if isinstance(ev, SpeechChunk):
            seen += 1
            await handle.cancel()
    with pytest.raises(JobCancelled):
        await handle.result()
    assert 1 <= seen < 12


async def test_openai_voice_names_map_to_bark_presets(engine):
    model = next(m for m in engine.installed("tts") if m.name == "tiny-bark")
    assert map_voice("alloy", model) == "v2/en_speaker_0"
    assert map_voice("v2/de_speaker_3", model) == "v2/de_speaker_3"
    with pytest.raises(BadRequest):
        map_voice("grumpy-robot", model)


async def test_hd_model_names_mean_bark_when_installed(engine):
    assert pick_tts(engine, "tts-1-hd", 1) == ("tiny-bark", "")
    assert pick_tts(engine, "tts-1", 1) == ("piper-joe", "")


async def test_fast_voice_answers_when_bark_is_not_installed(engine):
    handle = await submit_speech(engine, "hello there.", Origin(), model="bark", response_format="wav")
    result = await handle.result()
    assert result.model == "piper-joe"
    assert "not installed" in result.note and "confab models pull bark" in result.note


async def test_fast_voice_answers_when_bark_would_wait_too_long(engine):
    engine.models.load_seconds["tiny-bark"] = 10 * engine.settings.bark_wait_budget_s
    resident = "tiny-bark" in engine.models.resident_names()
    if resident:
        await engine.models.unload("tiny-bark")
    try:
        name, note = pick_tts(engine, "tiny-bark", 1)
        assert name == "piper-joe" and "budget" in note
    finally:
        engine.models.load_seconds.pop("tiny-bark")
    assert pick_tts(engine, "tiny-bark", 1) == ("tiny-bark", "")
