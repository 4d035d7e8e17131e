"""/v1/audio/* through the official openai client, against a live server on loopback, with
real Whisper and Piper weights."""
from __future__ import annotations

import json
import math
import re
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
GERMAN = "Guten Morgen, wie geht es Ihnen heute?"     # Whisper base translates its start well


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def client(tmp_path_factory, shared_models_dir):
    settings = make_settings(tmp_path_factory.mktemp("data"), shared_models_dir,
                             max_audio_bytes=2 * 2**20, max_audio_seconds=20,
                             default_stt_model="whisper-base")    # speech input: OpenAI's 4,096 chars
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


async def raw_json(call) -> dict:
    response = await call
    assert response.headers["content-type"].startswith("application/json")
    return json.loads(response.content)


SEGMENT_KEYS = {"id", "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob",
                "compression_ratio", "no_speech_prob"}


async def test_verbose_json_segments_and_words_as_asked(client, clip):
    create = client.audio.transcriptions.with_raw_response.create
    plain = await raw_json(create(model="whisper-1", file=("note.ogg", clip), response_format="verbose_json"))
    assert {"task", "language", "duration", "text", "segments", "usage"} <= set(plain) and "words" not in plain
    assert plain["task"] == "transcribe" and plain["language"] == "english"
    assert plain["usage"] == {"type": "duration", "seconds": math.ceil(plain["duration"])}
    first = plain["segments"][0]
    assert set(first) == SEGMENT_KEYS
    assert first["id"] == 0 and first["seek"] == 0 and first["text"] and 0 <= first["start"] < first["end"]
    assert first["tokens"] and all(isinstance(t, int) for t in first["tokens"])
    assert [s["id"] for s in plain["segments"]] == list(range(len(plain["segments"])))

    words = await raw_json(create(model="whisper-1", file=("note.ogg", clip), response_format="verbose_json",
                                  timestamp_granularities=["word"]))
    assert "segments" not in words and len(words["words"]) >= 8
    assert all(set(w) == {"word", "start", "end"} and w["start"] <= w["end"] for w in words["words"])
    starts = [w["start"] for w in words["words"]]
    assert starts == sorted(starts)
    assert wer(TEXT, " ".join(w["word"] for w in words["words"])) <= 0.2

    both = await raw_json(create(model="whisper-1", file=("note.ogg", clip), response_format="verbose_json",
                                 timestamp_granularities=["word", "segment"]))
    assert both["segments"] and both["words"]
    assert both["words"][-1]["end"] <= both["segments"][-1]["end"] + 0.5


async def test_transcript_formats_have_their_content_types(client, clip):
    create = client.audio.transcriptions.with_raw_response.create
    for fmt, mime in [("json", "application/json"), ("verbose_json", "application/json"),
                      ("text", "text/plain"), ("srt", "text/plain"), ("vtt", "text/vtt")]:
        response = await create(model="whisper-1", file=("note.ogg", clip), response_format=fmt)
        assert response.headers["content-type"].split(";")[0] == mime, fmt
    srt = (await create(model="whisper-1", file=("note.ogg", clip), response_format="srt")).content.decode()
    assert re.fullmatch(r"(\d+\n\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}\n.+\n\n?)+", srt), srt
    vtt = (await create(model="whisper-1", file=("note.ogg", clip), response_format="vtt")).content.decode()
    assert re.fullmatch(r"WEBVTT\n\n(\d\d:\d\d:\d\d\.\d{3} --> \d\d:\d\d:\d\d\.\d{3}\n.+\n\n?)+", vtt), vtt


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


@pytest.fixture(scope="module")
def german(tmp_path_factory):
    path = tmp_path_factory.mktemp("de") / "de.wav"
    subprocess.run(["espeak-ng", "-v", "de", "-s", "130", "-w", str(path), GERMAN], check=True, timeout=30)
    return path.read_bytes()


async def test_translation_of_german_speech_in_every_format(client, german):
    create = client.audio.translations.create
    text = (await create(model="whisper-1", file=("de.wav", german))).text
    assert text.lower().startswith("good morning"), text
    verbose = await raw_json(client.audio.translations.with_raw_response.create(
        model="whisper-1", file=("de.wav", german), response_format="verbose_json"))
    assert verbose["task"] == "translate"
    assert verbose["language"] == "english"        # the translation's language, as OpenAI says
    assert verbose["segments"][0]["id"] == 0 and set(verbose["segments"][0]) == SEGMENT_KEYS
    # (past "good morning" Whisper base's guesses vary: its temperature fallback samples)
    assert verbose["text"].lower().startswith("good morning"), verbose["text"]
    plain = await create(model="whisper-1", file=("de.wav", german), response_format="text")
    assert plain.lower().startswith("good morning") and plain.endswith("\n"), plain
    srt = await create(model="whisper-1", file=("de.wav", german), response_format="srt")
    vtt = await create(model="whisper-1", file=("de.wav", german), response_format="vtt")
    assert srt.startswith("1\n00:00:00,") and vtt.startswith("WEBVTT\n\n00:00:00.")
    # the same speech transcribed: German, and said to be German
    heard = await raw_json(client.audio.transcriptions.with_raw_response.create(
        model="whisper-1", file=("de.wav", german), response_format="verbose_json"))
    assert heard["language"] == "german" and heard["text"].startswith("Guten Morgen"), heard["text"]


MAGIC = {
    "mp3": lambda b: b[:3] == b"ID3" or (b[0] == 0xFF and b[1] & 0xE0 == 0xE0),
    "opus": lambda b: b[:4] == b"OggS" and b"OpusHead" in b[:64],
    "aac": lambda b: b[0] == 0xFF and b[1] & 0xF6 == 0xF0,       # ADTS
    "flac": lambda b: b[:4] == b"fLaC",
    "wav": lambda b: b[:4] == b"RIFF" and b[8:12] == b"WAVE",
    "pcm": lambda b: len(b) % 2 == 0 and b[:4] not in (b"RIFF", b"OggS", b"fLaC"),
}


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
    assert MAGIC[fmt](data), data[:64]        # the container asked for, not just its label
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

async def expect(status: int, code: str, call, param: str | None = None):
    """OpenAI's error shape: the status, type, code, and the field at fault named in `param`."""
    with pytest.raises(openai.APIStatusError) as e:
        await call
    assert e.value.status_code == status, e.value.body
    assert e.value.body["code"] == code, e.value.body
    assert e.value.body["type"] == "invalid_request_error", e.value.body
    assert e.value.body["message"]
    assert e.value.body["param"] == param, e.value.body
    return e.value


async def test_not_audio(client):
    err = await expect(400, "invalid_media", client.audio.transcriptions.create(
        model="whisper-1", file=("notes.txt", b"meeting notes, not a recording\n" * 20)), "file")
    assert "not audio" in err.body["message"]


async def test_empty_file(client):
    await expect(400, "invalid_media", client.audio.transcriptions.create(model="whisper-1", file=("a.ogg", b"")),
                 "file")


async def test_silent_file(client, tmp_path):
    path = tmp_path / "quiet.wav"
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono",
                    "-t", "2", str(path)], check=True, timeout=30)
    err = await expect(400, "invalid_media", client.audio.transcriptions.create(
        model="whisper-1", file=("quiet.wav", path.read_bytes())), "file")
    assert "silent" in err.body["message"]


async def test_too_big(client):
    await expect(413, "limit_exceeded", client.audio.transcriptions.create(
        model="whisper-1", file=("big.wav", bytes(3 * 2**20))), "file")


async def test_too_long(client, tmp_path):
    long = espeak(" ".join([TEXT] * 8), tmp_path / "long.wav").read_bytes()
    err = await expect(400, "limit_exceeded", client.audio.transcriptions.create(
        model="whisper-1", file=("long.wav", long)), "file")
    assert "20 seconds" in err.body["message"]


async def test_unknown_model(client, clip):
    err = await expect(404, "model_not_found", client.audio.transcriptions.create(
        model="whisper-huge-v9", file=("note.ogg", clip)), "model")
    assert "whisper-base" in err.body["message"]
    await expect(404, "model_not_found", client.audio.speech.create(model="no-such-voice", voice="alloy",
                                                                    input="hi"), "model")


async def test_bad_fields(client, clip):
    for fields, param in [(dict(response_format="docx"), "response_format"),
                          (dict(language="klingon"), "language"),
                          (dict(temperature=2), "temperature"),
                          (dict(prompt="word " * 500), "prompt"),
                          (dict(timestamp_granularities=["word"]), "timestamp_granularities"),
                          (dict(response_format="verbose_json", timestamp_granularities=["letter"]),
                           "timestamp_granularities")]:
        code = "limit_exceeded" if param == "prompt" else "invalid_request"
        await expect(400, code, client.audio.transcriptions.create(
            model="whisper-1", file=("note.ogg", clip), **fields), param)
    await expect(400, "invalid_request", client.audio.speech.create(
        model="tts-1", voice="alloy", input="hi", response_format="midi"), "response_format")
    await expect(400, "invalid_request", client.audio.speech.create(
        model="tts-1", voice="alloy", input="hi", speed=9), "speed")
    await expect(400, "invalid_request", client.audio.speech.create(
        model="tts-1", voice="alloy", input="   "), "input")
    await expect(400, "invalid_request", client.audio.speech.create(
        model="tts-1", voice="alloy", input="hi", stream_format="midi"), "stream_format")


async def test_speech_input_over_openais_4096_characters(client):
    err = await expect(400, "limit_exceeded", client.audio.speech.create(
        model="tts-1", voice="alloy", input="x" * 4097), "input")
    assert err.body["message"] == ("The text to speak is 4097 characters; the limit is 4096 characters.")


async def test_unknown_voice_is_refused_by_name(client):
    err = await expect(400, "invalid_request", client.audio.speech.create(
        model="tts-1", voice="darth", input="Hello there."), "voice")
    assert err.body["message"].startswith("'darth' is not a voice of piper-joe;")
    assert "alloy" in err.body["message"]
    await expect(400, "invalid_request", client.audio.speech.create(
        model="tts-1", voice="v2/en_speaker_6", input="Hello there."), "voice")    # Bark's, not Piper's
    await expect(400, "invalid_request", client.audio.speech.create(
        model="tts-1", voice={"name": "alloy"}, input="Hello there."), "voice")


async def test_voice_as_openais_custom_voice_object(client):
    response = await client.audio.speech.with_raw_response.create(
        model="tts-1", voice={"id": "nova"}, input="Hello there.", response_format="wav")
    assert response.headers["content-type"] == "audio/wav" and probe_seconds(response.content) > 0.3
