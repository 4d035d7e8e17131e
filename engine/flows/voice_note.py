"""The voice-note pipeline: transcribe -> chat -> speak, each stage a job of its own.

Every stage carries the origin and its priority, so the scheduler can run the stages of many
voice notes together on whichever model is loaded. With `stream_sentences`, the answer is
spoken sentence by sentence while the chat model is still writing (the live voice loop); the
speak jobs waiting at once are bounded, later sentences joining the next job. `cancel()`
cancels whatever stage is queued or running and stops the pipeline from starting another.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable

from engine.errors import BadMedia, JobCancelled
from engine.jobs import ChatJob, ChatMessage, ChatResult, Origin, Token
from engine.media import audio
from engine.media.sentences import SentenceBuffer, split_sentences
from engine.priority import priority_class
from engine.runtime.handle import JobHandle
from engine.work.speech import (
    SpeechChunk,
    SpeechResult,
    TranscriptResult,
    submit_speech,
    submit_transcription,
)

log = logging.getLogger(__name__)

_END = object()
MAX_PENDING_SPEECH = 2
# The first words are spoken as soon as a clause this long is written (at a comma, colon or
# dash), not only at the end of the first sentence: the answer starts sooner.
FIRST_CLAUSE_CHARS = 24
# how long a cancelled stage may take to stop (a chat runner stops at its next token)
STAGE_STOP_S = 10.0


@dataclass(frozen=True)
class StageStarted:
    stage: str        # transcribe, chat, speak
    job_id: str


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str


@dataclass
class VoiceNoteResult:
    transcript: str
    language: str
    answer: str
    audio: bytes                   # the answer aloud, in `format`
    format: str
    duration_s: float
    note: str = ""                 # e.g. why the fast voice answered instead of Bark
    jobs: list[str] = field(default_factory=list)
    # the same answer as samples and as a voice message's waveform: a door needs never decode
    # `audio` again to show or play it
    pcm: audio.Pcm = field(default_factory=lambda: audio.Pcm(b"", 16000))
    waveform: bytes = b""


class VoiceNote:
    """A running voice-note pipeline: `await result()`, iterate events, or `cancel()`."""

    def __init__(self, engine, origin: Origin, *, messages_for: Callable, chat_model: str = "",
                 stt_model: str | None = None, tts_model: str | None = None, voice: str | None = None,
                 response_format: str = "ogg", language: str | None = None,
                 stream_sentences: bool = False, max_tokens: int | None = None,
                 conversation: str = "", remember: Callable | None = None,
                 speak: bool = True):
        self.engine = engine
        self.origin = origin
        self.priority = priority_class(origin, engine.settings.admins)
        self.messages_for = messages_for
        self.chat_model, self.stt_model, self.tts_model = chat_model, stt_model, tts_model
        self.voice, self.format, self.language = voice, audio.check_format(response_format), language
        self.stream_sentences = stream_sentences
        self.max_tokens = max_tokens or engine.settings.voice_max_tokens
        self.conversation = conversation
        self.remember = remember
        self.speak = speak
        self.handles: list[JobHandle] = []
        self.stage = "intake"
        self._cancelled = False
        self._events: asyncio.Queue = asyncio.Queue()
        self._task: asyncio.Task | None = None

    # -- the caller's side ------------------------------------------------------------------

    def start(self, data: bytes | audio.Pcm | str) -> "VoiceNote":
        """Begin with a recording, or with the question's text already known (no transcription)."""
        self._task = asyncio.create_task(self._run_to_the_end(data), name="confab-voicenote")
        self._task.add_done_callback(lambda t: (t.exception() if not t.cancelled() else None,
                                                self._events.put_nowait(_END)))
        return self

    async def result(self) -> VoiceNoteResult:
        assert self._task is not None, "start() first"
        return await asyncio.shield(self._task)

    async def events(self) -> AsyncIterator[object]:
        while True:
            ev = await self._events.get()
            if ev is _END:
                return
            yield ev

    def __aiter__(self):
        return self.events()

    @property
    def done(self) -> bool:
        return self._task is not None and self._task.done()

    async def cancel(self) -> bool:
        """Cancel the stage queued or running now, and every later one."""
        if self.done:
            return False
        self._cancelled = True
        for h in list(self.handles):
            if not h.done:
                await h.cancel()
        return True

    # -- the stages --------------------------------------------------------------------------

    def _check(self) -> None:
        if self._cancelled:
            raise JobCancelled("The voice note was cancelled.")

    async def _track(self, stage: str, handle: JobHandle) -> JobHandle:
        self.handles.append(handle)
        if self._cancelled:
            await handle.cancel()
        self._events.put_nowait(StageStarted(stage, handle.id))
        return handle

    async def _run_to_the_end(self, data) -> VoiceNoteResult:
        """The pipeline, which ends (answered, failed or cancelled) only once every stage it
        started has stopped: a barge-in leaves nothing running behind the person's back."""
        try:
            return await self._run(data)
        except BaseException:
            for h in list(self.handles):
                if not h.done:
                    await h.cancel()
            for h in list(self.handles):
                await h.ended(timeout=STAGE_STOP_S)
            raise

    async def _run(self, data) -> VoiceNoteResult:
        if isinstance(data, str):
            transcript = TranscriptResult(data, self.language or "", 0.0, [], "")
        else:
            transcript = await self._transcribe(data)

        self.stage = "chat"
        messages = self.messages_for(transcript.text)
        if asyncio.iscoroutine(messages):
            messages = await messages
        chat = await self._track("chat", await self.engine.submit(ChatJob(
            model=self.chat_model, origin=self.origin, priority=self.priority, messages=messages,
            max_tokens=self.max_tokens, conversation=self.conversation)))
        if not self.speak:
            answer, pcm, note = await self._forward_tokens(chat), audio.Pcm(b"", 16000), ""
        elif self.stream_sentences:
            answer, pcm, note = await self._speak_streaming(chat)
        else:
            answer, pcm, note = await self._speak_whole(chat)
        self._check()
        encoded = await asyncio.to_thread(audio.encode, pcm, self.format) if pcm.data else b""
        wave = await asyncio.to_thread(audio.waveform, pcm.data, pcm.rate) if pcm.data else b""
        if self.remember is not None:
            await self.remember(transcript.text, answer)
        return VoiceNoteResult(transcript.text, transcript.language, answer, encoded, self.format,
                               round(pcm.duration_s, 3), note, [h.id for h in self.handles], pcm, wave)

    async def _transcribe(self, data) -> TranscriptResult:
        self.stage = "transcribe"
        h = await self._track("transcribe", await submit_transcription(
            self.engine, data, self.origin, model=self.stt_model, language=self.language,
            priority=self.priority))
        transcript: TranscriptResult = await h.result()
        self._check()
        if not transcript.text.strip():
            raise BadMedia("I could not make out any words in that recording.", reason="no_speech")
        self._events.put_nowait(Transcript(transcript.text, transcript.language))
        return transcript

    async def _forward_tokens(self, chat: JobHandle, on_text=None) -> str:
        async for ev in chat:
            if isinstance(ev, Token):
                self._events.put_nowait(ev)
                if on_text is not None:
                    await on_text(ev.text)
        result: ChatResult = await chat.result()
        self._check()
        return result.text

    async def _speak_whole(self, chat: JobHandle) -> tuple[str, audio.Pcm, str]:
        answer = await self._forward_tokens(chat)
        if not split_sentences(answer):
            return answer, audio.Pcm(b"", 16000), ""
        self.stage = "speak"
        h = await self._track("speak", await submit_speech(
            self.engine, answer, self.origin, model=self.tts_model, voice=self.voice,
            response_format="wav", priority=self.priority, check_length=False))
        async for ev in h:
            if isinstance(ev, SpeechChunk):
                self._events.put_nowait(ev)
        result: SpeechResult = await h.result()
        self._check()
        return answer, audio.read_wav_bytes(result.audio), result.note

    async def _speak_streaming(self, chat: JobHandle) -> tuple[str, audio.Pcm, str]:
        buffer = SentenceBuffer(first_clause=FIRST_CLAUSE_CHARS)
        pending: list[str] = []            # sentences not yet given to a speak job
        speak_jobs: asyncio.Queue = asyncio.Queue()
        notes: list[str] = []
        index = 0

        async def submit(sentences: list[str]) -> None:
            self.stage = "speak"
            h = await self._track("speak", await submit_speech(
                self.engine, " ".join(sentences), self.origin, model=self.tts_model,
                voice=self.voice, response_format="wav", priority=self.priority, check_length=False))
            if h.job.note and h.job.note not in notes:
                notes.append(h.job.note)
            await speak_jobs.put(h)

        def waiting() -> int:
            return sum(1 for h in self.handles if h.job.kind == "speak" and h.status == "queued")

        async def on_text(text: str) -> None:
            pending.extend(buffer.feed(text))
            if pending and waiting() < MAX_PENDING_SPEECH:
                batch = pending[:]
                pending.clear()
                await submit(batch)

        async def play() -> audio.Pcm:
            nonlocal index
            total = audio.Pcm(b"", 0)
            while (h := await speak_jobs.get()) is not None:
                async for ev in h:
                    if isinstance(ev, SpeechChunk):
                        self._events.put_nowait(SpeechChunk(index, ev.text, ev.pcm, ev.sample_rate))
                        index += 1
                result: SpeechResult = await h.result()
                pcm = audio.read_wav_bytes(result.audio)
                if total.data:
                    total = total + audio.silence(0.2, pcm.rate)
                total = total + pcm if total.data else pcm
            return total

        player = asyncio.create_task(play())
        try:
            answer = await self._forward_tokens(chat, on_text)
            pending.extend(buffer.flush())
            if pending:
                await submit(pending)
            await speak_jobs.put(None)
            pcm = await player
        except BaseException:
            player.cancel()       # the stages themselves are stopped by _run_to_the_end
            raise
        return answer, pcm if pcm.rate else audio.Pcm(b"", 16000), " ".join(notes)


def messages_with(system_prompt: str, history: list[tuple[str, str]]) -> Callable[[str], list[ChatMessage]]:
    """The usual chat context: a system prompt, the conversation so far, then the transcript."""
    def build(transcript: str) -> list[ChatMessage]:
        out = [ChatMessage("system", system_prompt)] if system_prompt else []
        out += [ChatMessage(role, content) for role, content in history]
        out.append(ChatMessage("user", transcript))
        return out
    return build


async def voice_note(engine, data: bytes | audio.Pcm, origin: Origin, *,
                     conversation: str | None = None, **options) -> VoiceNote:
    """Start a voice note: the transcript answered by the chat model within `conversation`
    (its memory in the store, when given), and the answer spoken. Returns the running pipeline."""
    settings = engine.settings
    if "messages_for" not in options:       # a door gives its own when it read the memory itself
        history = await engine.history(conversation, settings.history_messages) if conversation else []
        options["messages_for"] = messages_with(settings.system_prompt, history)

    async def remember(question: str, answer: str) -> None:
        await engine.remember_exchange(conversation, question, answer)

    options.setdefault("conversation", conversation or "")
    if conversation:
        options.setdefault("remember", remember)
    return VoiceNote(engine, origin, **options).start(data)
