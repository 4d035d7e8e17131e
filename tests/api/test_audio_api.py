"""/v1/audio/* through the official openai client, against a live server on loopback, with
real Whisper and Piper weights."""
from __future__ import annotations

import subprocess

import openai
import pytest
import pytest_asyncio
from openai import AsyncOpenAI

from engine import Engine
from tests.conftest import make_settings
from tests.speech_helpers import espeak, probe_seconds, requires_speech_tools, serve, wer

pytestmark = [requires_speech_tools, pytest.mark.asyncio(loop_scope="module")]

TEXT = "Please send the quarterly report to the whole team by Friday."


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def client(tmp_path_factory, shared_models_dir):
    settings = make_settings(tmp_path_factory.mktemp("data"), shared_models_dir,
                             max_audio_bytes=2 * 2**20, max_audio_seconds=20, max_speech_chars=600,
                             default_stt_model="whisper-base")
    engine = Engine(settings)
    if not {"whisper-base", "piper-joe"} <= {m.name for m in engine.installed()}:
        pytest.skip("the offline speech models are not installed (requirements/models.txt)")
    await engine.start(resume=False)
    async with serve(engine) as base:
        async with AsyncOpenAI(base_url=base, api_key="test", max_retries=0, timeout=120) as c:
            yield c
    await engine.close()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    wav = espeak(TEXT, folder / "clip.wav")
    ogg = folder / "clip.ogg"     # a Discord voice message is ogg/opus
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-i", str(wav), "-c:a", "libopus", str(ogg)],
                   check=True, timeout=30)
    return ogg.read_bytes()


async def test_transcription_json(client, clip):
    result = await client.audio.transcriptions.create(model="whisper-1", file=("note.ogg", clip))
    assert wer(TEXT, result.text) <= 0.2, result.text


async def test_transcription_text_srt_vtt(client, clip):
    text = await client.audio.transcriptions.create(model="whisper-base", file=("note.ogg", clip),
                                                    response_format="text")
    assert wer(TEXT, text) <= 0.2
    srt = await client.audio.transcriptions.create(model="whisper-base", file=("note.ogg", clip),
                                                   response_format="srt")
    assert srt.startswith("1\n00:00:00,") and " --> " in srt
    vtt = await client.audio.transcriptions.create(model="whisper-base", file=("note.ogg", clip),
                                                   response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n00:00:00.") and " --> " in vtt


async def test_transcription_verbose_json_with_words(client, clip):
    result = await client.audio.transcriptions.create(
        model="whisper-1", file=("note.ogg", clip), response_format="verbose_json",
        timestamp_granularities=["word", "segment"], language="en", prompt="quarterly report",
        temperature=0)
    assert result.language == "english" and 2 < result.duration < 6
    assert result.segments and result.segments[0].start >= 0
    assert len(result.words) >= 8 and result.words[0].word.lower().startswith("please")


async def test_transcription_streamed(client, clip):
    stream = await client.audio.transcriptions.create(model="whisper-1", file=("note.ogg", clip),
                                                      stream=True)
    deltas, done = [], None
    async for event in stream:
        if event.type == "transcript.text.delta":
            deltas.append(event.delta)
        elif event.type == "transcript.text.done":
            done = event.text
    assert deltas and "".join(deltas) == done and wer(TEXT, done) <= 0.2


async def test_translation(client, clip):
    result = await client.audio.translations.create(model="whisper-1", file=("note.ogg", clip))
    assert wer(TEXT, result.text) <= 0.3


@pytest.mark.parametrize("fmt, mime, args", [
    ("mp3", "audio/mpeg", ()), ("opus", "audio/ogg", ()), ("aac", "audio/aac", ()),
    ("flac", "audio/flac", ()), ("wav", "audio/wav", ()),
    ("pcm", "audio/pcm", ("-f", "s16le", "-ar", "24000", "-ac", "1"))])
async def test_speech_in_every_format(client, fmt, mime, args):
    response = await client.audio.speech.with_raw_response.create(
        model="tts-1", voice="alloy", input="Hello from Confab. This is the second sentence.",
        response_format=fmt)
    assert response.headers["content-type"] == mime
    assert response.headers["x-confab-model"] == "piper-joe"
    data = response.content
    assert 2.0 < probe_seconds(data, args) < 6.0


async def test_speech_speed(client):
    normal = await client.audio.speech.create(model="tts-1", voice="echo", input="One two three four five six.",
                                              response_format="wav")
    fast = await client.audio.speech.create(model="tts-1", voice="echo", input="One two three four five six.",
                                            response_format="wav", speed=2.0)
    ratio = probe_seconds(await fast.aread()) / probe_seconds(await normal.aread())
    assert 0.45 < ratio < 0.56, ratio     # twice as fast is half as long


async def test_speech_round_trip_through_the_api(client):
    text = "The meeting moved to Thursday afternoon. Please bring the budget numbers."
    speech = await client.audio.speech.create(model="tts-1", voice="nova", input=text, response_format="mp3")
    heard = await client.audio.transcriptions.create(model="whisper-1", file=("a.mp3", await speech.aread()))
    assert wer(text, heard.text) <= 0.1, heard.text


async def test_bark_not_installed_falls_back_and_says_so(client):
    response = await client.audio.speech.with_raw_response.create(
        model="bark", voice="v2/en_speaker_6", input="Hello there.", response_format="wav")
    assert response.headers["x-confab-model"] == "piper-joe"
    assert "not installed" in response.headers["x-confab-note"]


async def test_models_list_speech_kinds(client):
    kinds = {m.id: m.kind for m in (await client.models.list()).data}
    assert kinds["whisper-base"] == "stt" and kinds["piper-joe"] == "tts"


# -- errors, in OpenAI's shape ---------------------------------------------------------------------

async def expect(status: int, code: str, call):
    with pytest.raises(openai.APIStatusError) as e:
        await call
    assert e.value.status_code == status, e.value.body
    assert e.value.body["code"] == code, e.value.body
    assert e.value.body["message"]
    return e.value


async def test_not_audio(client):
    err = await expect(400, "invalid_media", client.audio.transcriptions.create(
        model="whisper-1", file=("notes.txt", b"meeting notes, not a recording\n" * 20)))
    assert "not audio" in err.body["message"]


async def test_empty_file(client):
    await expect(400, "invalid_media", client.audio.transcriptions.create(model="whisper-1", file=("a.ogg", b"")))


async def test_silent_file(client, tmp_path):
    path = tmp_path / "quiet.wav"
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono",
                    "-t", "2", str(path)], check=True, timeout=30)
    err = await expect(400, "invalid_media", client.audio.transcriptions.create(
        model="whisper-1", file=("quiet.wav", path.read_bytes())))
    assert "silent" in err.body["message"]


async def test_too_big(client):
    await expect(413, "limit_exceeded", client.audio.transcriptions.create(
        model="whisper-1", file=("big.wav", bytes(3 * 2**20))))


async def test_too_long(client, tmp_path):
    long = espeak(" ".join([TEXT] * 8), tmp_path / "long.wav").read_bytes()
    err = await expect(400, "limit_exceeded", client.audio.transcriptions.create(
        model="whisper-1", file=("long.wav", long)))
    assert "20 seconds" in err.body["message"]


async def test_unknown_model(client, clip):
    err = await expect(404, "model_not_found", client.audio.transcriptions.create(
        model="whisper-huge-v9", file=("note.ogg", clip)))
    assert "whisper-base" in err.body["message"]
    await expect(404, "model_not_found", client.audio.speech.create(model="no-such-voice", voice="alloy",
                                                                    input="hi"))


async def test_bad_fields(client, clip):
    await expect(400, "invalid_request", client.audio.transcriptions.create(
        model="whisper-1", file=("note.ogg", clip), response_format="docx"))
    await expect(400, "invalid_request", client.audio.transcriptions.create(
        model="whisper-1", file=("note.ogg", clip), language="klingon"))
    await expect(400, "invalid_request", client.audio.speech.create(
        model="tts-1", voice="alloy", input="hi", response_format="midi"))
    await expect(400, "invalid_request", client.audio.speech.create(
        model="tts-1", voice="alloy", input="hi", speed=9))
    await expect(400, "limit_exceeded", client.audio.speech.create(
        model="tts-1", voice="alloy", input="word " * 200))
