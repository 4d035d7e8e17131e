"""One voice conversation: each turn is a class-0 voice note whose answer plays as it is made.

A turn sends the recorded question through the engine's voice-note pipeline with sentence
streaming, so the first sentence plays while the chat model is still writing the rest. Barge-in
stops playback at once and cancels the remaining jobs. The conversation's memory lives in the
engine's store, so later turns see the earlier ones.

With `keep_turns` (the live loop), a turn is kept in the store from its recording until its
answer has been heard (engine/storage/intake.py), and once the answer is complete, the answer too. After a
crash, `resume()` answers the turn that was cut off, once: it says the kept answer again, or asks
again from the kept recording, and drops the jobs the dead process left behind.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Protocol

from engine import ConfabError, JobCancelled, Origin, Token
from engine.flows.voice_note import Transcript, VoiceNote, voice_note
from engine.media import audio
from engine.media.audio import Pcm, silence
from engine.messages import explain
from engine.work.speech import SpeechChunk, discard, submit_speech

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
                 on_event: Callable[[object], None] | None = None, keep_turns: bool = False):
        self.engine, self.player = engine, player
        self.keep_turns = keep_turns
        self.listening_since = time.time()     # turns kept before this are a dead process's
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
        if not self.keep_turns:
            return await self._turn(recording)
        key = f"voice:{self.user}:{self.session}:{uuid.uuid4().hex[:12]}"
        data = audio.wav_bytes(recording) if isinstance(recording, Pcm) else bytes(recording)
        path = self.engine.settings.data_path / "uploads" / "voice" / f"{key.replace(':', '_')}.audio"
        await asyncio.to_thread(_write, path, data)
        turn = {"kind": "turn", "user": self.user, "session": self.session, "recording": str(path)}
        await self.engine.accept("voice", key, turn)
        return await self._answer_kept(key, turn, recording)

    async def _answer_kept(self, key: str, turn: dict, recording: bytes | Pcm) -> TurnResult:
        with self.engine.answering(key, {"voice": key}, by_job=False) as intake:
            out = await self._turn(recording, key, turn)
        await self.engine.settle(intake)          # heard (or cut by the person): not again
        await asyncio.to_thread(_remove, turn.get("recording", ""))
        return out

    async def _turn(self, recording: bytes | Pcm, key: str = "", turn: dict | None = None) -> TurnResult:
        started = time.monotonic()
        out = TurnResult()
        self.turns += 1
        self.player.reset()

        async def remember(question: str, answer: str) -> None:
            await self.engine.remember_exchange(self.conversation, question, answer)
            if key:     # complete: after a crash from here on, say it again rather than ask again
                await self.engine.store.update_event(key, {**turn, "transcript": question, "answer": answer})
        try:
            self.current = await voice_note(
                self.engine, recording, self.origin, conversation=self.conversation,
                stream_sentences=True, response_format="wav", stt_model=self.stt_model,
                tts_model=self.tts_model, voice=self.voice, remember=remember)
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

    async def resume(self) -> list[TurnResult]:
        """Answer this person's turns that a crash cut off (kept before this loop began), in the
        order they were asked; the loop goes on in their conversation."""
        done = []
        for key, turn in await self.engine.open_events("voice", before=self.listening_since):
            if turn.get("user") != self.user:
                continue
            self.session = turn.get("session") or self.session
            await self._drop_left_behind(key)
            if turn.get("answer"):
                done.append(await self._say_again(key, turn))
                continue
            try:
                recording = await asyncio.to_thread(_read, turn.get("recording", ""))
            except OSError:
                log.warning("the recording of %s is gone; it cannot be answered", key)
                await self.engine.settle(key)
                continue
            log.info("answering %s again: a crash cut it off", key)
            done.append(await self._answer_kept(key, turn, recording))
        return done

    async def _drop_left_behind(self, key: str) -> None:
        """The turn's jobs that the dead process left queued or running: never run now."""
        for record, _, ref in await self.engine.store.unfinished_jobs():
            try:
                where = json.loads(ref or "{}")
            except ValueError:
                continue
            if isinstance(where, dict) and where.get("voice") == key:
                await self.engine.store.set_status(record["id"], "cancelled")
                await asyncio.to_thread(discard, record.get("audio_path", ""))

    async def _say_again(self, key: str, turn: dict) -> TurnResult:
        """The answer was complete and remembered; only hearing it was cut off."""
        started = time.monotonic()
        out = TurnResult(transcript=turn.get("transcript", ""), answer=turn["answer"])
        self.player.reset()
        with self.engine.answering(key, {"voice": key}, by_job=False) as intake:
            try:
                handle = await submit_speech(self.engine, turn["answer"], self.origin, model=self.tts_model,
                                             voice=self.voice, response_format="wav", check_length=False)
                out.jobs = [handle.id]
                result = await handle.result()
                pcm = audio.read_wav_bytes(result.audio)
                out.first_audio_s = out.full_audio_s = time.monotonic() - started
                self.player.play(pcm)
                await self.player.drain()
            except JobCancelled:
                out.interrupted = True
            except ConfabError as e:
                out.error = explain(e)
        await self.engine.settle(intake)
        await asyncio.to_thread(_remove, turn.get("recording", ""))
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


def _write(path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _remove(path: str) -> None:
    if path:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
