"""One voice conversation: each turn is a class-0 voice note whose answer plays as it is made.

A turn sends the recorded question through the engine's voice-note pipeline with sentence
streaming, so the first sentence plays while the chat model is still writing the rest. Barge-in
stops playback at once and cancels the remaining jobs. The conversation's memory lives in the
engine's store, so later turns see the earlier ones.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Protocol

from engine import JobCancelled, Origin, Token
from engine.audio import Pcm, silence
from engine.pipelines import Transcript, VoiceNote, voice_note
from engine.speech import SpeechChunk

log = logging.getLogger(__name__)

SENTENCE_GAP_S = 0.2


class Player(Protocol):
    """Where the answer is heard: a sound card, or a file when headless."""

    def play(self, pcm: Pcm) -> None:
        """Queue audio; returns at once."""

    async def drain(self) -> None:
        """Wait until everything queued has been heard."""

    def stop(self) -> None:
        """Stop now and drop what is queued (barge-in)."""

    def reset(self) -> None:
        """Ready for the next turn's answer."""


class FilePlayer:
    """A player for headless runs and tests: keeps what it was given, with the gaps between
    sentences. With `realtime`, `drain` waits as long as the audio would take to play."""

    def __init__(self, realtime: bool = False, clock: Callable[[], float] = time.monotonic):
        self.realtime, self.clock = realtime, clock
        self.chunks: list[Pcm] = []
        self.played_at: list[float] = []
        self.stopped = False
        self._until = 0.0

    def play(self, pcm: Pcm) -> None:
        if self.stopped:
            return
        if self.chunks:
            self.chunks.append(silence(SENTENCE_GAP_S, pcm.rate))
        self.chunks.append(pcm)
        now = self.clock()
        self.played_at.append(now)
        self._until = max(self._until, now) + pcm.duration_s

    async def drain(self) -> None:
        if self.realtime and not self.stopped:
            while not self.stopped and self.clock() < self._until:
                await asyncio.sleep(min(0.05, self._until - self.clock()))

    def stop(self) -> None:
        self.stopped = True
        self._until = 0.0

    def reset(self) -> None:
        self.chunks, self.played_at, self.stopped, self._until = [], [], False, 0.0

    def pcm(self) -> Pcm:
        out = Pcm(b"", self.chunks[0].rate if self.chunks else 16_000)
        for c in self.chunks:
            out = out + c if out.data else c
        return out


@dataclass
class TurnResult:
    transcript: str = ""
    answer: str = ""
    audio: Pcm = field(default_factory=lambda: Pcm(b"", 16_000))
    first_audio_s: float | None = None     # from the turn's start to the first sentence's audio
    full_audio_s: float | None = None      # ... to the whole answer's audio being ready
    total_s: float = 0.0
    interrupted: bool = False
    ended_by: str = ""                     # push-to-talk: key, silence (VAD) or limit
    note: str = ""
    error: str = ""
    jobs: list[str] = field(default_factory=list)


class VoiceLoop:
    def __init__(self, engine, player: Player, *, user: str = "voice", session: str | None = None,
                 stt_model: str | None = None, tts_model: str | None = None, voice: str | None = None,
                 on_event: Callable[[object], None] | None = None):
        self.engine, self.player = engine, player
        self.user = user
        self.session = session or uuid.uuid4().hex[:8]
        self.stt_model, self.tts_model, self.voice = stt_model, tts_model, voice
        self.on_event = on_event or (lambda ev: None)
        self.current: VoiceNote | None = None
        self.turns = 0

    @property
    def origin(self) -> Origin:
        return Origin(platform="voice", user=self.user, channel=self.session, is_live_voice=True)

    @property
    def conversation(self) -> str:
        return f"voice:{self.user}:{self.session}"

    async def turn(self, recording: bytes | Pcm) -> TurnResult:
        """Answer one recorded question aloud; returns when the answer has played (or was cut)."""
        from engine.messages import explain
        from engine import ConfabError
        started = time.monotonic()
        out = TurnResult()
        self.turns += 1
        self.player.reset()
        try:
            self.current = await voice_note(
                self.engine, recording, self.origin, conversation=self.conversation,
                stream_sentences=True, response_format="wav", stt_model=self.stt_model,
                tts_model=self.tts_model, voice=self.voice)
            async for ev in self.current:
                if isinstance(ev, SpeechChunk):
                    if out.first_audio_s is None:
                        out.first_audio_s = time.monotonic() - started
                    self.player.play(Pcm(ev.pcm, ev.sample_rate))
                elif isinstance(ev, Transcript):
                    out.transcript = ev.text
                self.on_event(ev)
            result = await self.current.result()
            out.full_audio_s = time.monotonic() - started
            out.answer, out.note, out.jobs = result.answer, result.note, result.jobs
            await self.player.drain()
        except JobCancelled:
            out.interrupted = True
        except ConfabError as e:
            out.error = explain(e)
        finally:
            if self.current is not None:
                out.jobs = out.jobs or [h.id for h in self.current.handles]
                out.interrupted = out.interrupted or self.current._cancelled
            self.current = None
        out.total_s = time.monotonic() - started
        if isinstance(self.player, FilePlayer):
            out.audio = self.player.pcm()
        return out

    async def barge_in(self) -> bool:
        """The key was pressed while the answer plays: stop playback, cancel what remains."""
        self.player.stop()
        current = self.current
        if current is None:
            return False
        return await current.cancel()


def is_token(ev: object) -> bool:
    return isinstance(ev, Token)
