"""Wyoming for Home Assistant, through the wyoming package's own AsyncTcpClient on loopback:
Describe lists the installed models, a spoken command (espeak-ng, sent in 44.1 kHz stereo pieces
as a satellite might) comes back as its words from real Whisper, Synthesize comes back as Piper
audio that Whisper hears again, and a transcript handed to Confab as Assist's agent is answered
by the chat model, class 0 of the user home-assistant."""
from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.handle import Handled
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize

from engine import Engine
from engine.media import audio
from tests.conftest import chat_model_installed, make_settings
from tests.speech_helpers import espeak, requires_speech_tools, wer
from voice.wyoming import serve

pytestmark = [requires_speech_tools, pytest.mark.asyncio(loop_scope="module")]

COMMAND = "Turn on the lights in the kitchen."


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def wyoming(tmp_path_factory, shared_models_dir):
    engine = Engine(make_settings(tmp_path_factory.mktemp("data"), shared_models_dir,
                                  default_stt_model="whisper-tiny.en", voice_max_tokens=30,
                                  max_audio_seconds=10))
    if not {"whisper-tiny.en", "piper-joe"} <= {m.name for m in engine.installed()}:
        pytest.skip("the offline speech models are not installed (requirements/models.txt)")
    await engine.start(resume=False)
    server = await serve(engine, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield engine, port
    server.close()
    await engine.close()


async def read(client, kind, timeout: float = 120):
    async def next_of_kind():
        while True:
            event = await client.read_event()
            assert event is not None, "the server closed the connection"
            if kind.is_type(event.type) or Error.is_type(event.type):
                return event
    return await asyncio.wait_for(next_of_kind(), timeout)


async def send_speech(client, pcm: audio.Pcm, rate=44_100, channels=2) -> None:
    """As a satellite streams it: its own rate and channels, a tenth of a second at a time."""
    up = audio.resample(pcm, rate).data
    if channels == 2:
        up = b"".join(up[i:i + 2] * 2 for i in range(0, len(up), 2))
    step = rate // 10 * 2 * channels
    await client.write_event(AudioStart(rate=rate, width=2, channels=channels).event())
    for i in range(0, len(up), step):
        await client.write_event(AudioChunk(rate=rate, width=2, channels=channels, audio=up[i:i + step]).event())
    await client.write_event(AudioStop().event())


async def test_describe_lists_the_installed_models(wyoming):
    engine, port = wyoming
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Describe().event())
        info = Info.from_event(await read(client, Info))
    assert "whisper-tiny.en" in [m.name for m in info.asr[0].models]
    assert [m for m in info.asr[0].models if m.name == "whisper-tiny.en"][0].languages == ["en"]
    voice = [v for v in info.tts[0].voices if v.name == "piper-joe"][0]
    assert voice.installed and voice.languages == ["en_US"]
    if chat_model_installed():
        assert info.handle and info.handle[0].models


async def test_speech_to_text_then_text_to_speech(wyoming, tmp_path):
    engine, port = wyoming
    spoken = audio.decode(espeak(COMMAND, tmp_path / "c.wav").read_bytes(), 2**26, 60, 30)
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Transcribe(name="whisper-tiny.en", language="en").event())
        await send_speech(client, spoken)
        heard = await read(client, Transcript)
        assert Transcript.is_type(heard.type), heard
        assert wer(COMMAND, Transcript.from_event(heard).text) <= 0.3

        await client.write_event(Synthesize(text="The kitchen lights are on. Anything else?").event())
        start = AudioStart.from_event(await read(client, AudioStart))
        pcm, event = b"", await client.read_event()
        while AudioChunk.is_type(event.type):
            pcm += AudioChunk.from_event(event).audio
            event = await client.read_event()
        assert AudioStop.is_type(event.type) and start.width == 2 and start.channels == 1
        said = audio.Pcm(pcm, start.rate)
        assert said.duration_s > 1.0
        # the same connection takes the answer's audio back as a command: the words come through
        await client.write_event(Transcribe().event())
        await send_speech(client, said, rate=start.rate, channels=1)
        again = Transcript.from_event(await read(client, Transcript)).text
        assert wer("The kitchen lights are on. Anything else?", again) <= 0.3, again
    jobs = [h for h in engine._handles.values() if h.job.origin.platform == "wyoming"]
    assert {h.priority for h in jobs} == {0} and {h.job.origin.user for h in jobs} == {"home-assistant"}


async def test_too_much_audio_and_an_unknown_voice_get_words(wyoming):
    engine, port = wyoming
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Transcribe().event())
        await send_speech(client, audio.silence(11.0, 16_000), rate=16_000, channels=1)
        error = Error.from_event(await read(client, Error))
        assert error.code == "limit_exceeded" and "10 seconds" in error.text, error.text
        await client.write_event(Synthesize(text="Hello there.", voice=None).event())
        assert AudioStart.is_type((await read(client, AudioStart)).type)


@pytest.mark.skipif(not chat_model_installed(), reason="the offline SmolLM2 package is not installed")
async def test_assist_conversation_is_answered_by_the_chat_model(wyoming):
    engine, port = wyoming
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Transcript(text="What is the capital of France?").event())
        handled = await read(client, Handled, 180)
        assert Handled.is_type(handled.type), handled
        assert Handled.from_event(handled).text.strip()
    chat = [h for h in engine._handles.values() if h.job.kind == "chat" and h.job.origin.platform == "wyoming"]
    assert chat and chat[0].priority == 0 and chat[0].job.conversation.startswith("wyoming:")
