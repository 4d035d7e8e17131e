"""Wyoming, for Home Assistant: speech-to-text, text-to-speech and Assist's conversation over
the Wyoming protocol (the `wyoming` package), on Confab's engine.

    Describe                                  -> Info: the installed Whisper models, Piper
                                                 voices and chat model
    Transcribe, AudioStart/Chunk/Stop          -> Transcript
    Synthesize                                 -> AudioStart, AudioChunk per sentence, AudioStop
    Transcript (as a conversation agent)       -> Handled, answered by the chat model

Every job is class 0 (a person is waiting at a speaker), of the user "home-assistant", each
satellite's conversation kept by its address. Wyoming has no keys: listen on loopback, or on a
network only Home Assistant reaches.
"""
from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioChunkConverter, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.handle import Handled
from wyoming.info import (
    AsrModel,
    AsrProgram,
    Attribution,
    Describe,
    HandleModel,
    HandleProgram,
    Info,
    TtsProgram,
    TtsVoice,
)
from wyoming.server import AsyncEventHandler
from wyoming.tts import Synthesize

from engine import ChatJob, ConfabError, Origin
from engine.flows.voice_note import messages_with
from engine.media import audio
from engine.work.speech import LANGUAGE_NAMES, SpeechChunk, submit_speech, submit_transcription

log = logging.getLogger(__name__)

WIDTH, CHANNELS = 2, 1
ATTRIBUTION = Attribution(name="Confab", url="")


class ConfabHandler(AsyncEventHandler):
    """One Home Assistant connection."""

    def __init__(self, engine, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        super().__init__(reader, writer)
        self.engine = engine
        peer = writer.get_extra_info("peername") or ("local", 0)
        self.origin = Origin(platform="wyoming", user="home-assistant", channel=str(peer[0]),
                             is_live_voice=True)
        self.conversation = f"wyoming:{peer[0]}"
        self.to_stt = AudioChunkConverter(rate=audio.STT_RATE, width=WIDTH, channels=CHANNELS)
        self.audio = bytearray()
        self.stt_model: str | None = None
        self.language: str | None = None
        self.handles: list = []

    async def handle_event(self, event: Event) -> bool:
        try:
            if Describe.is_type(event.type):
                await self.write_event(describe(self.engine).event())
            elif Transcribe.is_type(event.type):
                asked = Transcribe.from_event(event)
                self.stt_model, self.language = asked.name or None, asked.language or None
                self.audio.clear()
            elif AudioStart.is_type(event.type):
                self.audio.clear()
            elif AudioChunk.is_type(event.type):
                self._hear(AudioChunk.from_event(event))
            elif AudioStop.is_type(event.type):
                await self._transcribe()
            elif Synthesize.is_type(event.type):
                await self._speak(Synthesize.from_event(event))
            elif Transcript.is_type(event.type):
                await self._answer(Transcript.from_event(event).text)
        except ConfabError as e:
            self.audio.clear()
            await self.write_event(Error(text=e.message, code=e.code).event())
        return True

    async def disconnect(self) -> None:
        for h in self.handles:
            if not h.done:
                await h.cancel()

    def _hear(self, chunk: AudioChunk) -> None:
        limit = self.engine.settings.max_audio_seconds
        if len(self.audio) / (audio.STT_RATE * WIDTH) > limit:
            return          # refused with words at AudioStop
        self.audio += self.to_stt.convert(chunk).audio

    async def _transcribe(self) -> None:
        pcm = audio.Pcm(bytes(self.audio), audio.STT_RATE)
        self.audio.clear()
        # a name that is not an installed model (a Home Assistant default) means the default one
        model = self.stt_model if self.stt_model in {m.name for m in self.engine.installed("stt")} else None
        handle = await submit_transcription(self.engine, pcm, self.origin, model=model,
                                            language=self.language)
        self.handles = [h for h in self.handles if not h.done] + [handle]
        result = await handle.result()
        await self.write_event(Transcript(text=result.text, language=result.language).event())

    async def _speak(self, asked: Synthesize) -> None:
        name = asked.voice.name if asked.voice else None
        model = name if name in {m.name for m in self.engine.installed("tts")} else None
        voice = (asked.voice.speaker or (name if model is None else None)) if asked.voice else None
        handle = await submit_speech(self.engine, asked.text, self.origin, model=model, voice=voice,
                                     response_format="wav")
        self.handles = [h for h in self.handles if not h.done] + [handle]
        rate = None
        async for ev in handle:
            if isinstance(ev, SpeechChunk):
                if rate is None:
                    rate = ev.sample_rate
                    await self.write_event(AudioStart(rate=rate, width=WIDTH, channels=CHANNELS).event())
                else:
                    await self.write_event(AudioChunk(rate=rate, width=WIDTH, channels=CHANNELS,
                                                      audio=audio.silence(0.2, rate).data).event())
                await self.write_event(AudioChunk(rate=rate, width=WIDTH, channels=CHANNELS, audio=ev.pcm).event())
        await handle.result()
        await self.write_event(AudioStop().event())

    async def _answer(self, text: str) -> None:
        settings = self.engine.settings
        history = await self.engine.history(self.conversation, settings.history_messages)
        handle = await self.engine.submit(ChatJob(
            origin=self.origin, messages=messages_with(settings.system_prompt, history)(text),
            max_tokens=settings.voice_max_tokens, conversation=self.conversation))
        self.handles = [h for h in self.handles if not h.done] + [handle]
        answer = (await handle.result()).text
        await self.engine.remember_exchange(self.conversation, text, answer)
        await self.write_event(Handled(text=answer).event())


def describe(engine) -> Info:
    """What this Confab offers Home Assistant: its installed models, by name."""
    def artifact(name: str, description: str) -> dict:
        return dict(name=name, attribution=ATTRIBUTION, installed=True, description=description,
                    version=None)
    stt = [AsrModel(**artifact(m.name, f"Whisper ({m.name})"),
                    languages=["en"] if m.name.endswith(".en") else sorted(LANGUAGE_NAMES))
           for m in engine.installed("stt")]
    tts = [TtsVoice(**artifact(m.name, f"Confab voice {m.name}"), languages=[_voice_language(m.path)])
           for m in engine.installed("tts")]
    chat = [HandleModel(**artifact(m.name, f"Confab chat ({m.name})"), languages=["en"])
            for m in engine.installed("chat")]
    return Info(asr=[AsrProgram(**artifact("confab-stt", "Confab speech-to-text"), models=stt)],
                tts=[TtsProgram(**artifact("confab-tts", "Confab text-to-speech"), voices=tts)],
                handle=[HandleProgram(**artifact("confab", "Confab's chat model"), models=chat)] if chat else [])


def _voice_language(path) -> str:
    """A Piper voice's language from its .onnx.json; Bark and others: English."""
    for candidate in (Path(f"{path}.json"), *Path(path).glob("*.onnx.json")) if Path(path).exists() else ():
        try:
            return json.loads(candidate.read_text())["language"]["code"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return "en"


async def serve(engine, host: str = "127.0.0.1", port: int = 10300) -> asyncio.AbstractServer:
    """Listen for Home Assistant; returns the server (its sockets say the port)."""
    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await ConfabHandler(engine, reader, writer).run()
    return await asyncio.start_server(on_client, host, port)
