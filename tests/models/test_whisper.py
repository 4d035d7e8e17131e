"""Whisper and Piper with their real weights: speech recognised word for word, and the round trip
text -> Piper -> Whisper base recovering the words."""
from __future__ import annotations

import dataclasses

import pytest
import pytest_asyncio

from engine import Engine, Origin, Progress
from engine.errors import BadRequest, JobCancelled
from engine.runtime.engine import job_from_record
from engine.work.speech import (
    SpeakJob,
    SpeechChunk,
    TranscribeJob,
    TranscriptSegment,
    submit_speech,
    submit_transcription,
)
from models.whisper_stt import compute_type_for
from tests.conftest import make_settings
from tests.speech_helpers import espeak, requires_speech_tools, wer

pytestmark = [requires_speech_tools, pytest.mark.asyncio(loop_scope="module")]

SENTENCES = [
    "The meeting moved to Thursday afternoon.",
    "Please bring the budget numbers for the second quarter.",
    "Our new office opens next month in the city centre.",
    "Remember to water the plants before you leave.",
]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def engine(tmp_path_factory, shared_models_dir):
    settings = make_settings(tmp_path_factory.mktemp("data"), shared_models_dir)
    names = {m.name for m in Engine(settings).installed()}
    if not {"whisper-base", "whisper-tiny.en", "piper-joe"} <= names:
        pytest.skip("the offline speech models are not installed (requirements/models.txt)")
    e = Engine(settings)
    await e.start(resume=False)
    yield e
    await e.close()


async def test_compute_type_follows_the_device():
    assert compute_type_for("cpu") == "int8"
    assert compute_type_for("cuda") == "float16"
    assert compute_type_for("cuda:1") == "float16"


async def test_espeak_speech_is_transcribed(engine, tmp_path):
    text = "Please send the quarterly report to the whole team by Friday."
    wav = espeak(text, tmp_path / "q.wav").read_bytes()
    handle = await submit_transcription(engine, wav, Origin(), model="whisper-base",
                                        word_timestamps=True)
    segments = [ev async for ev in handle if isinstance(ev, TranscriptSegment)]
    result = await handle.result()
    assert wer(text, result.text) <= 0.2, result.text
    assert result.language == "en" and result.duration_s == pytest.approx(3.5, abs=1.5)
    assert segments and " ".join(s.text for s in segments) == result.text
    words = [w for s in result.segments for w in s.words]
    assert len(words) >= 8 and all(0 <= w.start <= w.end <= result.duration_s + 0.5 for w in words)
    assert [w.start for w in words] == sorted(w.start for w in words)
    # the upload kept for the queued job is gone once the job ended
    assert not list((engine.settings.data_path / "uploads").glob("*.wav"))


async def test_piper_to_whisper_round_trip_recovers_the_words(engine):
    text = " ".join(SENTENCES)
    speak = await submit_speech(engine, text, Origin(), response_format="flac")
    chunks = [ev async for ev in speak if isinstance(ev, SpeechChunk)]
    spoken = await speak.result()
    assert spoken.model == "piper-joe" and spoken.sentences == len(SENTENCES) == len(chunks)
    assert [c.text for c in chunks] == SENTENCES
    heard = await (await submit_transcription(engine, spoken.audio, Origin(), model="whisper-base")).result()
    assert wer(text, heard.text) <= 0.10, heard.text


async def test_language_hint_and_prompt_reach_whisper(engine, tmp_path):
    wav = espeak("Confab transcribes voice notes.", tmp_path / "p.wav").read_bytes()
    result = await (await submit_transcription(engine, wav, Origin(), model="whisper-base",
                                               language="en", prompt="Confab")).result()
    assert result.language == "en"
    assert "confab" in result.text.lower()


async def test_translation_into_english(engine, tmp_path):
    wav = espeak("Good morning, how are you?", tmp_path / "t.wav").read_bytes()
    result = await (await submit_transcription(engine, wav, Origin(), model="whisper-base",
                                               task="translate")).result()
    assert result.task == "translate" and wer("good morning how are you", result.text) <= 0.4


async def test_english_only_model_refuses_to_translate(engine, tmp_path):
    wav = espeak("Hello there.", tmp_path / "e.wav").read_bytes()
    handle = await submit_transcription(engine, wav, Origin(), model="whisper-tiny.en", task="translate")
    with pytest.raises(BadRequest, match="English only"):
        await handle.result()


async def test_unknown_language_is_refused_before_queueing(engine, tmp_path):
    wav = espeak("Hello there.", tmp_path / "l.wav").read_bytes()
    with pytest.raises(BadRequest) as e:
        await submit_transcription(engine, wav, Origin(), language="klingon")
    assert e.value.param == "language"


async def test_tiny_en_with_its_catalog_beam(engine, tmp_path):
    text = "Our new office opens next month."
    wav = espeak(text, tmp_path / "tiny.wav").read_bytes()
    result = await (await submit_transcription(engine, wav, Origin(), model="whisper-tiny.en")).result()
    assert wer(text, result.text) <= 0.35, result.text


async def test_cancelling_a_running_transcription_stops_it(engine, tmp_path):
    long = " ".join(SENTENCES * 12)    # about two minutes: Whisper decodes it in several windows
    wav = espeak(long, tmp_path / "long.wav", speed=190).read_bytes()
    handle = await submit_transcription(engine, wav, Origin(), model="whisper-tiny.en")
    async for ev in handle:
        if isinstance(ev, TranscriptSegment):
            assert await handle.cancel(), "the job ended before the first window's segments were read"
            break
    with pytest.raises(JobCancelled):
        await handle.result()
    assert not list((engine.settings.data_path / "uploads").glob("*.wav"))


async def test_speech_jobs_survive_the_store(engine, tmp_path):
    """Jobs are written to the store as JSON and rebuilt after a restart."""
    for job in (SpeakJob(text="Hi.", voice="v2/en_speaker_6", speed=1.5, response_format="mp3",
                         origin=Origin(platform="slack", user="U1", is_dm=True)),
                TranscribeJob(audio_path=str(tmp_path / "x.wav"), task="translate", language="de",
                              prompt="names", word_timestamps=True)):
        record = job.to_record()
        import json
        again = job_from_record(type(job), json.loads(json.dumps(record)))
        assert dataclasses.asdict(again) == dataclasses.asdict(job)


async def test_speech_progress_events(engine):
    handle = await submit_speech(engine, "One. Two is here. Three is here too.", Origin(), response_format="wav")
    progress = [ev for ev in [e async for e in handle] if isinstance(ev, Progress)]
    assert [(p.step, p.total) for p in progress] == [(1, 2), (2, 2)] or progress[-1].step == progress[-1].total


async def test_audio_can_travel_inside_the_job(engine, tmp_path):
    """With workers on other hosts the 16 kHz WAV rides in the job (base64), not on disk."""
    import base64

    from engine.media.audio import decode, wav_bytes
    from engine.work.speech import TranscribeJob
    text = "Remember to water the plants."
    pcm = decode(espeak(text, tmp_path / "w.wav").read_bytes(), 2**25, 60, 30)
    job = TranscribeJob(model="whisper-tiny.en", audio_b64=base64.b64encode(wav_bytes(pcm)).decode())
    result = await (await engine.submit(job)).result()
    assert wer(text, result.text) <= 0.35, result.text
