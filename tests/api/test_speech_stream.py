"""Streamed speech over HTTP: POST /v1/audio/speech sends each sentence as soon as it is spoken,
as a chunked body (pcm, wav, mp3, aac) or OpenAI's server-sent events, with real Piper; what
arrives decodes to the same speech as the whole file, and Whisper hears the words in it."""
from __future__ import annotations

import base64
import json

import aiohttp
import pytest
import pytest_asyncio

from engine import Engine
from tests.conftest import make_settings
from tests.speech_helpers import probe_seconds, requires_speech_tools, serve, wer

pytestmark = [requires_speech_tools, pytest.mark.asyncio(loop_scope="module")]

SENTENCES = [f"This is sentence number {n} of a long announcement about the new office." for n in
             ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
              "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen")]
LONG = " ".join(SENTENCES)
SHORT = "The train leaves at nine. Please be on time."


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def api(tmp_path_factory, shared_models_dir):
    engine = Engine(make_settings(tmp_path_factory.mktemp("data"), shared_models_dir,
                                  default_stt_model="whisper-tiny.en"))
    if not {"whisper-tiny.en", "piper-joe"} <= {m.name for m in engine.installed()}:
        pytest.skip("the offline speech models are not installed (requirements/models.txt)")
    await engine.start(resume=False)
    async with serve(engine) as base, aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
        yield engine, base, http
    await engine.close()


async def speak(http, base, text, **fields) -> tuple[aiohttp.ClientResponse, bytes]:
    async with http.post(f"{base}/audio/speech", json={"model": "tts-1", "voice": "alloy", "input": text,
                                                        **fields}) as r:
        return r, await r.read()


async def test_the_first_sentence_arrives_while_the_rest_is_still_being_spoken(api):
    engine, base, http = api
    async with http.post(f"{base}/audio/speech", json={"model": "tts-1", "voice": "alloy", "input": LONG,
                                                        "response_format": "pcm"}) as r:
        assert r.status == 200 and r.headers["Content-Type"] == "audio/pcm"
        job = engine.handle(r.headers["X-Confab-Job-Id"])
        first = await r.content.readany()
        still_speaking = not job.done          # the job has spoken one sentence, not eighteen
        rest = await r.read()
    assert first and still_speaking
    # 24 kHz 16-bit: at least a second of speech per sentence
    assert len(first + rest) / 2 / 24_000 > len(SENTENCES)


@pytest.mark.parametrize("fmt, mime", [("wav", "audio/wav"), ("mp3", "audio/mpeg"), ("aac", "audio/aac")])
async def test_a_streamed_file_is_the_whole_speech(api, fmt, mime):
    engine, base, http = api
    r, streamed = await speak(http, base, SHORT, response_format=fmt)
    assert r.status == 200 and r.headers["Content-Type"] == mime
    assert r.headers.get("Transfer-Encoding") == "chunked"
    whole = (await engine.handle(r.headers["X-Confab-Job-Id"]).result()).audio
    assert abs(probe_seconds(streamed) - probe_seconds(whole)) < 0.25
    if fmt == "wav":
        assert streamed[:4] == b"RIFF" and streamed[4:8] == b"\xff\xff\xff\xff"   # length unknown
    if fmt == "mp3":
        assert streamed.count(b"ID3") <= 1       # later pieces carry no tags of their own
    # Whisper (through Confab's own intake) hears the words in the streamed file
    form = aiohttp.FormData()
    form.add_field("file", streamed, filename=f"speech.{fmt}")
    form.add_field("model", "whisper-1")
    async with http.post(f"{base}/audio/transcriptions", data=form) as t:
        assert t.status == 200, await t.text()
        assert wer(SHORT, (await t.json())["text"]) <= 0.3


async def test_server_sent_events_carry_the_audio_then_done(api):
    engine, base, http = api
    r, body = await speak(http, base, SHORT, response_format="pcm", stream_format="sse")
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in body.decode().splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in events][-1] == "speech.audio.done"
    deltas = [e for e in events if e["type"] == "speech.audio.delta"]
    assert len(deltas) == 2                   # one a sentence
    pcm = b"".join(base64.b64decode(e["audio"]) for e in deltas)
    _, raw = await speak(http, base, SHORT, response_format="pcm")
    # the same speech, give or take 0.25 s as above: Piper samples its phoneme lengths, so two
    # syntheses of one text differ (CI once saw 0.15 s between them)
    assert abs(len(pcm) - len(raw)) <= 0.25 * 24000 * 2


async def test_what_cannot_stream_is_refused_or_sent_whole(api):
    engine, base, http = api
    r, body = await speak(http, base, SHORT, response_format="opus", stream_format="sse")
    assert r.status == 400 and json.loads(body)["error"]["param"] == "response_format"
    r, body = await speak(http, base, SHORT, response_format="flac")
    assert r.status == 200 and "Content-Length" in r.headers and body[:4] == b"fLaC"
    r, body = await speak(http, base, SHORT, response_format="pcm", stream_format="bits")
    assert r.status == 400 and json.loads(body)["error"]["param"] == "stream_format"
