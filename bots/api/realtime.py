"""GET /v1/realtime: OpenAI's Realtime API over a WebSocket, audio in and audio out.

A session is one live conversation of the key's caller: class 0 (live voice), its own
conversation key (so the chat runner's slot keeps its prompt), the caller's per-user limits.
Audio in is PCM16 at 24 kHz (or G.711 mu-law / A-law at 8 kHz); with `server_vad` turn
detection the session finds the end of each turn itself. A committed turn is transcribed at
once (its own job, started before any response asks for it); a response is the voice-note
pipeline from the transcript on: chat, then speech sentence by sentence, each sentence sent as
`response.output_audio.delta` events as soon as it is spoken.

Barge-in: speech that starts while an answer is still playing cancels the rest of the answer and
truncates the assistant item to the sentences the caller had begun to hear (estimated from the
audio sent and the time since it began to play); `conversation.item.truncate` from the client
does the same from its own playback position. A malformed event gets an `error` event and the
session goes on; a client that goes away has its jobs cancelled.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
import uuid
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from bots.api.app_util import caller_id
from bots.api.keys import ENGINE
from engine.errors import BadRequest, ConfabError, JobCancelled, LimitExceeded
from engine.flows.voice_note import VoiceNote
from engine.jobs import ChatMessage, Origin, Token
from engine.media import audio
from engine.media.vad import Endpointer
from engine.safety import safe_json
from engine.work.speech import SpeechChunk, map_voice, pick_tts, stt_model_name, submit_transcription

log = logging.getLogger(__name__)

RATE = 24_000                      # PCM16 in and out, as OpenAI has it
MAX_EVENT_BYTES = 16 * 2**20       # one event (OpenAI allows 15 MB of audio per append)
MAX_ITEMS = 200                    # items kept per session; the oldest go first
DELTA_MS = 500                     # audio sent in pieces this long
SENTENCE_GAP_MS = 200
OPENAI_MODELS = ("gpt-realtime", "gpt-4o-realtime", "gpt-4o-mini-realtime", "gpt-audio")
FORMATS = ("audio/pcm", "audio/pcmu", "audio/pcma")
RESPONSE_FIELDS = {"instructions", "output_modalities", "max_output_tokens", "metadata",
                   "conversation", "audio"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


class EventError(BadRequest):
    """A client event Confab refuses; the session goes on."""

    def __init__(self, message: str, param: str | None = None, code: str = "invalid_value"):
        super().__init__(message, param=param)
        self.code = code


@dataclass
class Item:
    id: str
    role: str                      # user, assistant, system
    part: str                      # input_text, input_audio, output_text, output_audio
    text: str = ""                 # the text, or the audio's transcript
    status: str = "completed"
    transcription: asyncio.Task | None = None      # an input_audio item's, while it runs
    job: object = None                             # ... and its job's handle
    spoken: list[tuple[float, str]] = field(default_factory=list)   # output audio: (start ms, sentence)
    audio_ms: float = 0.0

    def wire(self) -> dict:
        key = "text" if self.part.endswith("_text") else "transcript"
        text = self.text if self.text or self.part != "input_audio" else None
        return {"id": self.id, "object": "realtime.item", "type": "message", "role": self.role,
                "status": self.status, "content": [{"type": self.part, key: text}]}

    def truncate(self, end_ms: float) -> None:
        """Keep the sentences whose audio had begun by `end_ms`."""
        self.text = " ".join(text for start, text in self.spoken if start < end_ms)
        self.audio_ms = min(self.audio_ms, end_ms)


@dataclass
class Response:
    id: str
    item: Item
    modalities: list[str]
    max_tokens: int
    instructions: str
    metadata: dict | None = None
    status: str = "in_progress"
    reason: str = ""
    note: VoiceNote | None = None
    task: asyncio.Task | None = None
    first_sent: float | None = None        # when its first audio left
    sent_ms: float = 0.0

    def heard_ms(self) -> float:
        """How much of the answer the client has played by now, at most."""
        if self.first_sent is None:
            return 0.0
        return min(self.sent_ms, (time.monotonic() - self.first_sent) * 1000)

    def playing(self) -> bool:
        return self.first_sent is not None and self.heard_ms() < self.sent_ms

    def wire(self, voice: str, fmt: dict) -> dict:
        details = None
        if self.status in ("cancelled", "failed", "incomplete"):
            details = {"type": self.status, "reason": self.reason or None}
        return {"id": self.id, "object": "realtime.response", "status": self.status,
                "status_details": details, "output": [self.item.wire()] if self.status != "in_progress" else [],
                "conversation_id": None, "output_modalities": self.modalities,
                "max_output_tokens": self.max_tokens, "metadata": self.metadata,
                "audio": {"output": {"format": fmt, "voice": voice}}, "usage": None}


@dataclass
class Config:
    instructions: str
    voice: str = "alloy"
    input_format: dict = field(default_factory=lambda: {"type": "audio/pcm", "rate": RATE})
    output_format: dict = field(default_factory=lambda: {"type": "audio/pcm", "rate": RATE})
    turn_detection: dict | None = field(default_factory=lambda: {
        "type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500,
        "create_response": True, "interrupt_response": True, "idle_timeout_ms": None})
    transcription: dict | None = None
    modalities: list[str] = field(default_factory=lambda: ["audio"])
    max_output_tokens: int | str = "inf"


# -- reading the client's fields ---------------------------------------------------------------

def _obj(value, param: str) -> dict:
    if not isinstance(value, dict):
        raise EventError(f"'{param}' must be an object.", param)
    return value


def _format(value, param: str) -> dict:
    value = _obj(value, param)
    kind = value.get("type")
    if kind not in FORMATS:
        raise EventError(f"'{param}.type' must be one of {', '.join(FORMATS)}.", f"{param}.type")
    if kind == "audio/pcm":
        if value.get("rate", RATE) != RATE:
            raise EventError(f"'{param}.rate' must be {RATE}: PCM16 is 24 kHz here.", f"{param}.rate")
        return {"type": kind, "rate": RATE}
    return {"type": kind}


def _modalities(value, param: str) -> list[str]:
    if value not in (["audio"], ["text"]):
        raise EventError(f"'{param}' must be [\"audio\"] or [\"text\"].", param)
    return list(value)


def _max_tokens(value, param: str, ceiling: int) -> int | str:
    if value == "inf":
        return value
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= ceiling:
        raise EventError(f"'{param}' must be 'inf' or a whole number from 1 to {ceiling}.", param)
    return value


def _turn_detection(value, param: str) -> dict | None:
    if value is None:
        return None
    value = _obj(value, param)
    if value.get("type") != "server_vad":
        raise EventError("Confab detects turns with 'server_vad' only (or null: the client "
                         "commits each turn).", f"{param}.type")
    out = Config("").turn_detection
    for name, lo, hi in (("threshold", 0.0, 1.0), ("prefix_padding_ms", 0, 5000),
                         ("silence_duration_ms", 100, 10_000)):
        if name in value:
            v = value[name]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
                raise EventError(f"'{param}.{name}' must be a number from {lo:g} to {hi:g}.", f"{param}.{name}")
            out[name] = v
    for name in ("create_response", "interrupt_response"):
        if name in value:
            if not isinstance(value[name], bool):
                raise EventError(f"'{param}.{name}' must be true or false.", f"{param}.{name}")
            out[name] = value[name]
    if value.get("idle_timeout_ms") is not None:
        raise EventError("Confab has no idle timeout; leave 'idle_timeout_ms' out.", f"{param}.idle_timeout_ms")
    return out


def _b64(value, param: str) -> bytes:
    if not isinstance(value, str):
        raise EventError(f"'{param}' must be base64-encoded audio.", param)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise EventError(f"'{param}' is not valid base64.", param) from None


# -- the session -------------------------------------------------------------------------------

class Session:
    def __init__(self, engine, ws: web.WebSocketResponse, origin: Origin, model: str):
        self.engine, self.ws, self.origin, self.model = engine, ws, origin, model
        self.settings = engine.settings
        self.id = origin.channel
        self.conversation = f"realtime:{origin.user}:{self.id}"
        self.config = Config(self.settings.system_prompt)
        self.items: list[Item] = []
        self.buffer = bytearray()              # committed-to-be input, PCM16 24 kHz
        self.vad = Endpointer(rate=RATE, max_s=self.settings.max_audio_seconds)
        self._apply_vad()
        self.audio_in_ms = 0.0                 # all audio appended this session
        self.speech_item: str | None = None
        self.response: Response | None = None
        self.last: Response | None = None      # the latest response with audio (may still play)
        self.closed = False
        self.waiting: asyncio.Task | None = None     # a turn to answer once an interrupted one stops
        self._send_lock = asyncio.Lock()

    # -- wire --------------------------------------------------------------------------------

    async def send(self, type_: str, **fields) -> None:
        if self.closed or self.ws.closed:
            return
        data = json.dumps({"type": type_, "event_id": new_id("event"), **fields})
        async with self._send_lock:
            try:
                await self.ws.send_str(data)
            except (ConnectionResetError, RuntimeError):
                self.closed = True

    async def error(self, message: str, code: str, param: str | None = None,
                    event_id: str | None = None, type_: str = "invalid_request_error") -> None:
        await self.send("error", error={"type": type_, "code": code, "message": message,
                                        "param": param, "event_id": event_id})

    def session_wire(self) -> dict:
        c = self.config
        return {"type": "realtime", "object": "realtime.session", "id": self.id, "model": self.model,
                "instructions": c.instructions, "output_modalities": c.modalities,
                "max_output_tokens": c.max_output_tokens, "tools": [], "tool_choice": "auto",
                "audio": {"input": {"format": c.input_format, "transcription": c.transcription,
                                    "turn_detection": c.turn_detection, "noise_reduction": None},
                          "output": {"format": c.output_format, "voice": c.voice, "speed": 1.0}}}

    async def run(self) -> None:
        await self.send("session.created", session=self.session_wire())
        try:
            async for msg in self.ws:
                if msg.type == WSMsgType.TEXT:
                    await self.on_message(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await self.error("Send events as JSON text messages.", "invalid_event")
        finally:
            self.closed = True
            await self.close()

    async def close(self) -> None:
        """The client went away: nothing of this session goes on running."""
        if self.waiting is not None:
            self.waiting.cancel()
        if self.response is not None:
            await self.cancel_response("client_disconnected")
        for item in self.items:
            if item.transcription is not None and not item.transcription.done():
                item.transcription.cancel()
            if item.job is not None and not item.job.done:
                await item.job.cancel()

    async def on_message(self, raw: str) -> None:
        event_id = None
        try:
            try:
                event = safe_json.loads(raw)
            except (ValueError, UnicodeDecodeError) as e:
                raise EventError(f"The event is not valid JSON: {e}.", code="invalid_json") from None
            if not isinstance(event, dict):
                raise EventError("An event must be a JSON object.", code="invalid_event")
            event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
            handler = HANDLERS.get(event.get("type"))
            if handler is None:
                raise EventError(f"Unknown event type {event.get('type')!r}.", "type", "invalid_event")
            await handler(self, event)
        except EventError as e:
            await self.error(e.message, e.code, e.param, event_id)
        except ConfabError as e:
            await self.error(e.message, e.code, e.data.get("param"), event_id, e.kind)

    # -- session.update ------------------------------------------------------------------------

    async def session_update(self, event: dict) -> None:
        s = _obj(event.get("session"), "session")
        c = self.config
        new = Config(c.instructions, c.voice, c.input_format, c.output_format, c.turn_detection,
                     c.transcription, c.modalities, c.max_output_tokens)
        if s.get("type", "realtime") != "realtime":
            raise EventError("This endpoint serves 'realtime' sessions.", "session.type")
        if "instructions" in s:
            if not isinstance(s["instructions"], str):
                raise EventError("'session.instructions' must be a string.", "session.instructions")
            new.instructions = s["instructions"]
        if "output_modalities" in s:
            new.modalities = _modalities(s["output_modalities"], "session.output_modalities")
        if "max_output_tokens" in s:
            new.max_output_tokens = _max_tokens(s["max_output_tokens"], "session.max_output_tokens",
                                                self.settings.max_tokens)
        for name in ("tools", "tool_choice", "prompt", "tracing", "truncation", "include"):
            if s.get(name) not in (None, [], "auto"):
                raise EventError(f"Confab's Realtime sessions do not take '{name}'.", f"session.{name}")
        a = _obj(s.get("audio", {}), "session.audio")
        i = _obj(a.get("input", {}), "session.audio.input")
        o = _obj(a.get("output", {}), "session.audio.output")
        if "format" in i:
            new.input_format = _format(i["format"], "session.audio.input.format")
        if "turn_detection" in i:
            new.turn_detection = _turn_detection(i["turn_detection"], "session.audio.input.turn_detection")
        if "transcription" in i:
            t = i["transcription"]
            new.transcription = None if t is None else self._transcription(_obj(t, "session.audio.input.transcription"))
        if i.get("noise_reduction") is not None:
            raise EventError("Confab has no noise reduction; leave it null.", "session.audio.input.noise_reduction")
        if "format" in o:
            new.output_format = _format(o["format"], "session.audio.output.format")
        if "voice" in o:
            new.voice = self._voice(o["voice"])
        if o.get("speed", 1.0) != 1.0:
            raise EventError("Confab speaks Realtime answers at speed 1.0.", "session.audio.output.speed")
        if new.input_format != c.input_format and self.buffer:
            raise EventError("Commit or clear the audio buffer before changing its format.",
                             "session.audio.input.format")
        self.config = new
        self._apply_vad()
        await self.send("session.updated", session=self.session_wire())

    def _transcription(self, t: dict) -> dict:
        param = "session.audio.input.transcription"
        model = t.get("model") or "whisper-1"
        if not isinstance(model, str):
            raise EventError(f"'{param}.model' must be a string.", f"{param}.model")
        name = stt_model_name(self.engine, model)
        if name:
            self.engine.resolve_model(name, "stt")
        language, prompt = t.get("language"), t.get("prompt", "")
        if language is not None and not isinstance(language, str):
            raise EventError(f"'{param}.language' must be a string.", f"{param}.language")
        if not isinstance(prompt, str):
            raise EventError(f"'{param}.prompt' must be a string.", f"{param}.prompt")
        return {"model": model, "language": language, "prompt": prompt}

    def _voice(self, voice) -> str:
        if not isinstance(voice, str) or not voice:
            raise EventError("'session.audio.output.voice' must be a voice name.", "session.audio.output.voice")
        name, _ = pick_tts(self.engine, None, 0)
        installed = next((m for m in self.engine.installed("tts") if m.name == name), None)
        try:
            map_voice(voice, installed)
        except BadRequest as e:
            raise EventError(e.message, "session.audio.output.voice") from None
        return voice

    def _apply_vad(self) -> None:
        td = self.config.turn_detection
        if td:
            self.vad.silence_s = td["silence_duration_ms"] / 1000
            self.vad.ratio = 1.0 + 4.0 * td["threshold"]     # 0.5: the loop's own 3x the noise floor

    # -- input audio ---------------------------------------------------------------------------

    def _pcm_in(self, data: bytes) -> bytes:
        kind = self.config.input_format["type"]
        if kind == "audio/pcm":
            return data[: len(data) - len(data) % 2]
        return audio.resample(audio.g711_decode(data, kind.removeprefix("audio/")), RATE).data

    async def append(self, event: dict) -> None:
        pcm = self._pcm_in(_b64(event.get("audio"), "audio"))
        limit = self.settings.max_audio_seconds
        held = (len(self.buffer) + len(pcm)) / 2 / RATE
        if held > limit:
            raise EventError(f"The audio buffer would hold {held:.1f} s of audio; the limit is "
                             f"{limit:g} s (CONFAB_MAX_AUDIO_SECONDS). This piece was not added: "
                             "commit or clear the buffer, or send shorter turns.",
                             "audio", "input_audio_buffer_too_large")
        self.buffer += pcm
        self.audio_in_ms += len(pcm) / 2 / RATE * 1000
        if self.config.turn_detection:
            await self._listen(pcm)

    async def _listen(self, pcm: bytes) -> None:
        td = self.config.turn_detection
        heard_before = self.vad.heard_speech
        ended = self.vad.feed(pcm)
        if not heard_before and self.vad.heard_speech:
            self.speech_item = new_id("item")
            start = max(0, self.audio_in_ms - self.vad.speech_s * 1000 - td["prefix_padding_ms"])
            await self.send("input_audio_buffer.speech_started", audio_start_ms=int(start),
                            item_id=self.speech_item)
            if td["interrupt_response"]:
                await self.barge_in()
        if ended and self.vad.heard_speech:
            item_id = self.speech_item or new_id("item")
            await self.send("input_audio_buffer.speech_stopped", audio_end_ms=int(self.audio_in_ms),
                            item_id=item_id)
            await self.commit({}, item_id)
            r = self.response
            if td["create_response"] and r is not None and r.reason and r.task is not None:
                self.waiting = asyncio.create_task(self._answer_after(r.task))
            elif td["create_response"]:
                await self.create_response({})
        elif ended or (not self.vad.heard_speech and self.vad.silence_run_s > 2.0):
            # nothing said yet: keep a little of the quiet before speech, not all of it
            keep = int(td["prefix_padding_ms"] / 1000 * RATE) * 2
            del self.buffer[:max(0, len(self.buffer) - keep)]
            self.vad.restart()

    async def _answer_after(self, interrupted: asyncio.Task) -> None:
        """The turn that interrupted an answer is answered once that answer has wound down."""
        await asyncio.wait({interrupted})
        try:
            await self.create_response({})
        except EventError as e:
            await self.error(e.message, e.code, e.param)

    async def commit(self, event: dict, item_id: str | None = None) -> None:
        pcm = audio.Pcm(bytes(self.buffer), RATE)
        if pcm.duration_s < 0.1:
            raise EventError(f"The audio buffer holds {pcm.duration_s * 1000:.0f} ms; a commit needs "
                             "at least 100 ms of audio.", None, "input_audio_buffer_commit_empty")
        self.buffer.clear()
        self.vad.restart()
        self.speech_item = None
        item = Item(item_id or new_id("item"), "user", "input_audio")
        previous = self.items[-1].id if self.items else None
        self._add(item)
        await self.send("input_audio_buffer.committed", item_id=item.id, previous_item_id=previous)
        await self._announce(item, previous)
        item.transcription = asyncio.create_task(self._transcribe(item, pcm))

    async def clear(self, event: dict) -> None:
        self.buffer.clear()
        self.vad.restart()
        await self.send("input_audio_buffer.cleared")

    async def _transcribe(self, item: Item, pcm: audio.Pcm) -> None:
        t = self.config.transcription or {}
        try:
            item.job = await submit_transcription(
                self.engine, audio.resample(pcm, audio.STT_RATE), self.origin,
                model=t.get("model"), language=t.get("language"), prompt=t.get("prompt", ""))
            result = await item.job.result()
            item.text = result.text
            if self.config.transcription is not None:
                await self.send("conversation.item.input_audio_transcription.completed", item_id=item.id,
                                content_index=0, transcript=result.text,
                                usage={"type": "duration", "seconds": round(pcm.duration_s, 3)})
        except ConfabError as e:
            item.text = ""
            await self.send("conversation.item.input_audio_transcription.failed", item_id=item.id,
                            content_index=0, error={"type": e.kind, "code": e.code, "message": e.message})

    # -- the conversation ----------------------------------------------------------------------

    def _add(self, item: Item, after: str | None = None) -> None:
        at = len(self.items)
        if after is not None:
            at = next((i + 1 for i, x in enumerate(self.items) if x.id == after), None)
            if at is None:
                raise EventError(f"No item '{after}' in this conversation.", "previous_item_id",
                                 "item_not_found")
        self.items.insert(at, item)
        del self.items[:max(0, len(self.items) - MAX_ITEMS)]

    async def _announce(self, item: Item, previous: str | None) -> None:
        await self.send("conversation.item.added", item=item.wire(), previous_item_id=previous)
        await self.send("conversation.item.done", item=item.wire(), previous_item_id=previous)

    def _find(self, item_id) -> Item:
        item = next((x for x in self.items if x.id == item_id), None)
        if item is None:
            raise EventError(f"No item '{item_id}' in this conversation.", "item_id", "item_not_found")
        return item

    async def item_create(self, event: dict) -> None:
        spec = _obj(event.get("item"), "item")
        if spec.get("type", "message") != "message":
            raise EventError("Confab takes message items only (no function calls).", "item.type")
        role = spec.get("role")
        if role not in ("user", "assistant", "system"):
            raise EventError("'item.role' must be user, assistant or system.", "item.role")
        content = spec.get("content")
        if not isinstance(content, list) or len(content) != 1 or not isinstance(content[0], dict):
            raise EventError("'item.content' must hold one content part.", "item.content")
        part = content[0]
        kinds = {"user": ("input_text", "input_audio"), "system": ("input_text",),
                 "assistant": ("output_text", "text", "output_audio")}[role]
        kind = part.get("type")
        if kind not in kinds:
            raise EventError(f"A {role} item's content may be {', '.join(kinds)}.", "item.content.type")
        after = event.get("previous_item_id")
        item = Item(spec.get("id") if isinstance(spec.get("id"), str) else new_id("item"), role,
                    "output_text" if kind == "text" else kind)
        if kind == "input_audio":
            pcm = audio.Pcm(self._pcm_in(_b64(part.get("audio"), "item.content.audio")), RATE)
            if pcm.duration_s > self.settings.max_audio_seconds:
                raise LimitExceeded("The audio", f"{pcm.duration_s:.0f}",
                                    f"{self.settings.max_audio_seconds:g}", "seconds", param="item.content.audio")
            self._add(item, after)
            item.transcription = asyncio.create_task(self._transcribe(item, pcm))
        else:
            text = part.get("transcript" if kind == "output_audio" else "text")
            if not isinstance(text, str):
                raise EventError("The content part needs its text.", "item.content.text")
            item.text = text
            self._add(item, after)
        await self._announce(item, after if after is not None else self._before(item))

    def _before(self, item: Item) -> str | None:
        i = self.items.index(item)
        return self.items[i - 1].id if i else None

    async def item_delete(self, event: dict) -> None:
        item = self._find(event.get("item_id"))
        self.items.remove(item)
        await self.send("conversation.item.deleted", item_id=item.id)

    async def item_retrieve(self, event: dict) -> None:
        await self.send("conversation.item.retrieved", item=self._find(event.get("item_id")).wire())

    async def item_truncate(self, event: dict) -> None:
        item = self._find(event.get("item_id"))
        end = event.get("audio_end_ms")
        if item.role != "assistant" or item.part != "output_audio":
            raise EventError("Only an assistant's audio can be truncated.", "item_id")
        if isinstance(end, bool) or not isinstance(end, int) or not 0 <= end <= item.audio_ms + 1:
            raise EventError(f"'audio_end_ms' must be from 0 to the item's {item.audio_ms:.0f} ms of audio.",
                             "audio_end_ms")
        if self.response is not None and self.response.item is item:
            await self.cancel_response("client_cancelled")
        item.truncate(end)
        await self.send("conversation.item.truncated", item_id=item.id, content_index=0, audio_end_ms=end)

    def messages(self, instructions: str) -> list[ChatMessage]:
        out = [ChatMessage("system", instructions)] if instructions else []
        recent = [x for x in self.items if x.text.strip()][-self.settings.history_messages:]
        return out + [ChatMessage(x.role, x.text) for x in recent]

    # -- responses -------------------------------------------------------------------------------

    async def create_response(self, event: dict) -> None:
        if self.response is not None:
            raise EventError("A response is already in progress; cancel it first.", None,
                             "conversation_already_has_active_response")
        spec = _obj(event.get("response") or {}, "response")
        unknown = sorted(set(spec) - RESPONSE_FIELDS)
        if unknown:
            raise EventError(f"Confab's responses do not take '{unknown[0]}'.", f"response.{unknown[0]}")
        if spec.get("conversation", "auto") != "auto":
            raise EventError("Responses here always join the session's conversation ('auto').",
                             "response.conversation")
        c = self.config
        instructions = spec.get("instructions", c.instructions)
        if not isinstance(instructions, str):
            raise EventError("'response.instructions' must be a string.", "response.instructions")
        modalities = _modalities(spec["output_modalities"], "response.output_modalities") \
            if "output_modalities" in spec else c.modalities
        limit = _max_tokens(spec.get("max_output_tokens", c.max_output_tokens), "response.max_output_tokens",
                            self.settings.max_tokens)
        tokens = self.settings.voice_max_tokens if limit == "inf" else limit
        metadata = spec.get("metadata")
        item = Item(new_id("item"), "assistant", "output_audio" if modalities == ["audio"] else "output_text",
                    status="in_progress")
        r = Response(new_id("resp"), item, modalities, tokens, instructions,
                     metadata if isinstance(metadata, dict) else None)
        self.response = r
        r.task = asyncio.create_task(self._respond(r))

    async def cancel_response(self, reason: str) -> bool:
        r = self.response
        if r is None:
            return False
        r.reason = r.reason or reason
        if r.note is not None:
            await r.note.cancel()
        if r.task is not None and (r.note is None or self.closed):
            r.task.cancel()
        return True

    async def response_cancel(self, event: dict) -> None:
        if not await self.cancel_response("client_cancelled"):
            raise EventError("There is no response in progress to cancel.", None, "response_cancel_not_active")

    async def barge_in(self) -> None:
        """Speech began: the answer still playing stops where the caller is."""
        r = self.response if self.response is not None else self.last
        if r is None or not (r is self.response or r.playing()):
            return
        heard = r.heard_ms()
        if r is self.response:
            await self.cancel_response("turn_detected")
        if r.item.part == "output_audio" and heard < r.sent_ms:
            r.item.truncate(heard)
            await self.send("conversation.item.truncated", item_id=r.item.id, content_index=0,
                            audio_end_ms=int(heard))

    async def _respond(self, r: Response) -> None:
        c = self.config
        fmt = c.output_format
        spoken = r.item.part == "output_audio"
        await self.send("response.created", response=r.wire(c.voice, fmt))
        where = dict(response_id=r.id, item_id=r.item.id, output_index=0, content_index=0)
        try:
            for x in list(self.items):
                if x.transcription is not None:
                    await x.transcription
            messages = self.messages(r.instructions)
            if not any(m.role == "user" for m in messages):
                raise EventError("There is nothing to answer yet: no words were heard or written.",
                                 None, "nothing_to_answer")
            previous = self.items[-1].id if self.items else None
            self._add(r.item)
            await self.send("response.output_item.added", response_id=r.id, output_index=0, item=r.item.wire())
            await self.send("conversation.item.added", item=r.item.wire(), previous_item_id=previous)
            part = {"type": r.item.part, "transcript" if spoken else "text": ""}
            await self.send("response.content_part.added", part=part, **where)
            r.note = VoiceNote(self.engine, self.origin, messages_for=lambda _q: messages,
                               chat_model=self.model, voice=c.voice, response_format="wav",
                               stream_sentences=True, max_tokens=r.max_tokens,
                               conversation=self.conversation, speak=spoken)
            if r.reason:
                await r.note.cancel()
            r.note.start(messages[-1].content)
            async for ev in r.note:
                if r.reason:          # cancelled: what was already made is not sent
                    continue
                if isinstance(ev, SpeechChunk) and spoken:
                    await self._send_audio(r, ev, where)
                elif isinstance(ev, Token) and not spoken and ev.text:
                    r.item.text += ev.text
                    await self.send("response.output_text.delta", delta=ev.text, **where)
            result = await r.note.result()
            r.item.text = result.answer if not spoken else " ".join(t for _, t in r.item.spoken)
            r.status = "completed"
        except (JobCancelled, asyncio.CancelledError):
            r.status = "cancelled"
            if spoken and r.reason != "turn_detected":
                r.item.truncate(r.sent_ms)
        except EventError as e:
            r.status, r.reason = "failed", e.code
            await self.error(e.message, e.code, e.param)
        except ConfabError as e:
            r.status, r.reason = "failed", e.code
            await self.error(e.message, e.code, e.data.get("param"), type_=e.kind)
        except Exception:
            log.exception("realtime response %s failed", r.id)
            r.status, r.reason = "failed", "internal_error"
            await self.error("The response failed; the details are in Confab's log.", "internal_error",
                             type_="server_error")
        finally:
            self.response = None
            if spoken and r.first_sent is not None:
                self.last = r
        r.item.status = "completed" if r.status == "completed" else "incomplete"
        if r.item in self.items:
            key = "transcript" if spoken else "text"
            if spoken:
                await self.send("response.output_audio.done", **where)
                await self.send("response.output_audio_transcript.done", transcript=r.item.text, **where)
            else:
                await self.send("response.output_text.done", text=r.item.text, **where)
            await self.send("response.content_part.done", part={"type": r.item.part, key: r.item.text}, **where)
            await self.send("response.output_item.done", response_id=r.id, output_index=0, item=r.item.wire())
            await self.send("conversation.item.done", item=r.item.wire())
        await self.send("response.done", response=r.wire(c.voice, fmt))

    async def _send_audio(self, r: Response, chunk: SpeechChunk, where: dict) -> None:
        pcm = audio.Pcm(chunk.pcm, chunk.sample_rate)
        if r.item.spoken:
            pcm = audio.silence(SENTENCE_GAP_MS / 1000, pcm.rate) + pcm
        r.item.spoken.append((r.sent_ms + (SENTENCE_GAP_MS if r.item.spoken else 0), chunk.text))
        kind = self.config.output_format["type"]
        rate = RATE if kind == "audio/pcm" else audio.G711_RATE
        step = int(rate * DELTA_MS / 1000)
        out = audio.resample(pcm, rate)
        samples = out.data if kind == "audio/pcm" else audio.g711_encode(out, kind.removeprefix("audio/"))
        width = 2 if kind == "audio/pcm" else 1
        await self.send("response.output_audio_transcript.delta",
                        delta=(" " if len(r.item.spoken) > 1 else "") + chunk.text, **where)
        for i in range(0, len(samples), step * width):
            piece = samples[i:i + step * width]
            if r.first_sent is None:
                r.first_sent = time.monotonic()
            await self.send("response.output_audio.delta", delta=base64.b64encode(piece).decode(), **where)
            r.sent_ms += len(piece) / width / rate * 1000
        r.item.audio_ms = r.sent_ms

    async def ignore(self, event: dict) -> None:
        raise EventError("output_audio_buffer.clear is for WebRTC sessions; over a WebSocket, "
                         "send conversation.item.truncate.", "type", "invalid_event")


HANDLERS = {
    "session.update": Session.session_update,
    "input_audio_buffer.append": Session.append,
    "input_audio_buffer.commit": Session.commit,
    "input_audio_buffer.clear": Session.clear,
    "conversation.item.create": Session.item_create,
    "conversation.item.delete": Session.item_delete,
    "conversation.item.retrieve": Session.item_retrieve,
    "conversation.item.truncate": Session.item_truncate,
    "response.create": Session.create_response,
    "response.cancel": Session.response_cancel,
    "output_audio_buffer.clear": Session.ignore,
}


def chat_model(engine, requested: str | None) -> str:
    """OpenAI's Realtime model names mean the default chat model; other names must be installed."""
    if not requested or requested.startswith(OPENAI_MODELS):
        return engine.resolve_model(None, "chat").name
    return engine.resolve_model(requested, "chat").name


async def realtime(request: web.Request) -> web.WebSocketResponse:
    engine = request.app[ENGINE]
    model = chat_model(engine, request.query.get("model"))
    if request.query.get("intent") not in (None, "", "conversation"):
        raise BadRequest("Confab serves Realtime conversations; transcription-only sessions are "
                         "not offered.", param="intent")
    ws = web.WebSocketResponse(protocols=("realtime",), max_msg_size=MAX_EVENT_BYTES, heartbeat=30)
    await ws.prepare(request)
    origin = Origin(platform="api", user=caller_id(request), channel=new_id("sess"), is_live_voice=True)
    await Session(engine, ws, origin, model).run()
    return ws


def setup(app: web.Application) -> None:
    app.router.add_get("/v1/realtime", realtime)
