"""POST /v1/audio/transcriptions, /v1/audio/translations and /v1/audio/speech, as OpenAI has them."""
from __future__ import annotations

import asyncio
import base64
import json
import math
import time

from aiohttp import web

from bots.api.app_util import caller_id, result_of
from bots.api.errors import error_body
from bots.api.keys import ENGINE, SETTINGS, STREAMED_UPLOADS
from bots.api.sse import stream_job
from bots.api.validate import number, read_json, string
from engine.errors import BadMedia, BadRequest, ConfabError, LimitExceeded
from engine.jobs import Origin
from engine.media import audio
from engine.work.speech import (
    LANGUAGE_NAMES,
    SENTENCE_PAUSE_S,
    SpeechChunk,
    SpeechResult,
    TranscriptResult,
    TranscriptSegment,
    submit_speech,
    submit_transcription,
)

TRANSCRIPT_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
FIELD_LIMIT = 64 * 1024     # any form field but the file


def _origin(request: web.Request, user: str = "") -> Origin:
    return Origin(platform="api", user=caller_id(request) + (f"/{user[:64]}" if user else ""))


# -- reading the upload ------------------------------------------------------------------------

async def _drain(request: web.Request, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not await request.content.read(2**16):
            return


async def read_upload(request: web.Request) -> tuple[bytes, str, dict[str, list[str]]]:
    """The multipart form: the file's bytes and name, and the other fields. The file is read as
    a stream and refused past CONFAB_MAX_AUDIO_BYTES."""
    settings = request.app[SETTINGS]
    max_bytes = settings.max_audio_bytes
    if request.content_length is not None and request.content_length > max_bytes + FIELD_LIMIT * 8:
        await _drain(request)
        raise LimitExceeded("The upload", f"{request.content_length / 2**20:.1f}",
                            f"{max_bytes / 2**20:.1f}", "MB", status=413, param="file")
    if not request.content_type.startswith("multipart/"):
        raise BadRequest("Send the audio as multipart/form-data with a 'file' field.", param="file")
    try:
        reader = await request.multipart()
    except (ValueError, AssertionError) as e:
        raise BadRequest(f"The multipart body could not be read: {e}", param="file") from None
    data, filename, fields = None, "", {}
    try:
        while True:
            part = await reader.next()
            if part is None:
                break
            if not hasattr(part, "read_chunk"):
                raise BadRequest("Nested multipart bodies are not supported.")
            name = part.name or ""
            if name == "file":
                buf = bytearray()
                while chunk := await part.read_chunk(2**16):
                    buf += chunk
                    if len(buf) > max_bytes:
                        await _drain(request)
                        raise LimitExceeded("The audio file", f"over {max_bytes / 2**20:.1f}",
                                            f"{max_bytes / 2**20:.1f}", "MB", status=413,
                                            param="file")
                data, filename = bytes(buf), part.filename or ""
            else:
                raw = bytearray()
                while chunk := await part.read_chunk(2**14):
                    raw += chunk
                    if len(raw) > FIELD_LIMIT:
                        raise BadRequest(f"The form field '{name}' is too long.", param=name)
                fields.setdefault(name, []).append(raw.decode("utf-8", "replace"))
    except ValueError as e:
        raise BadRequest(f"The multipart body could not be read: {e}", param="file") from None
    if data is None:
        raise BadRequest("The form has no 'file' field with the audio.", param="file")
    return data, filename, fields


def _field(fields: dict[str, list[str]], name: str) -> str | None:
    values = fields.get(name)
    return values[-1] if values else None


def _float_field(fields, name: str, default: float, lo: float, hi: float) -> float:
    raw = _field(fields, name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"'{name}' must be a number.", param=name) from None
    if not math.isfinite(value) or not lo <= value <= hi:
        raise BadRequest(f"'{name}' must be between {lo:g} and {hi:g}.", param=name)
    return value


# -- transcripts in the formats asked for ------------------------------------------------------

def _stamp(seconds: float, sep: str) -> str:
    ms = int(round(max(0.0, seconds) * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_srt(result: TranscriptResult) -> str:
    blocks = [f"{i}\n{_stamp(s.start, ',')} --> {_stamp(s.end, ',')}\n{s.text}\n"
              for i, s in enumerate(result.segments, 1)]
    return "\n".join(blocks)


def to_vtt(result: TranscriptResult) -> str:
    blocks = [f"{_stamp(s.start, '.')} --> {_stamp(s.end, '.')}\n{s.text}\n" for s in result.segments]
    return "WEBVTT\n\n" + "\n".join(blocks)


def to_verbose(result: TranscriptResult, words: bool, segments: bool = True) -> dict:
    # a translation's language is the language it is in: always English (OpenAI's words)
    language = "english" if result.task == "translate" else LANGUAGE_NAMES.get(result.language, result.language)
    body = {"task": result.task, "language": language, "duration": result.duration_s,
            "text": result.text, "usage": {"type": "duration", "seconds": math.ceil(result.duration_s)}}
    if segments:
        body["segments"] = [{"id": s.id, "seek": s.seek, "start": s.start, "end": s.end, "text": s.text,
                             "tokens": s.tokens, "temperature": s.temperature,
                             "avg_logprob": s.avg_logprob, "compression_ratio": s.compression_ratio,
                             "no_speech_prob": s.no_speech_prob} for s in result.segments]
    if words:
        body["words"] = [{"word": w.word.strip(), "start": w.start, "end": w.end}
                         for s in result.segments for w in s.words]
    return body


def render_transcript(result: TranscriptResult, fmt: str, granularities: list[str],
                      headers: dict) -> web.Response:
    if fmt == "text":
        return web.Response(text=result.text + "\n", content_type="text/plain", headers=headers)
    if fmt == "srt":
        return web.Response(text=to_srt(result), content_type="text/plain", headers=headers)
    if fmt == "vtt":
        return web.Response(text=to_vtt(result), content_type="text/vtt", headers=headers)
    if fmt == "verbose_json":
        body = to_verbose(result, "word" in granularities,
                          "segment" in granularities or not granularities)
        return web.json_response(body, headers=headers)
    return web.json_response({"text": result.text, "usage": {"type": "duration",
                              "seconds": math.ceil(result.duration_s)}}, headers=headers)


# -- the routes -----------------------------------------------------------------------------

async def start_transcription(request: web.Request, data: bytes, fields: dict[str, list[str]],
                              task: str, meta: dict):
    """Check the form (its fields as multipart gives them) and queue the job; the response's
    format goes with it (`meta`)."""
    engine = request.app[ENGINE]
    fmt = (_field(fields, "response_format") or "json").strip()
    if fmt not in TRANSCRIPT_FORMATS:
        raise BadRequest(f"response_format must be one of {', '.join(TRANSCRIPT_FORMATS)}.",
                         param="response_format")
    granularities = [g.strip() for g in fields.get("timestamp_granularities[]", []) +
                     fields.get("timestamp_granularities", [])]
    if any(g not in ("word", "segment") for g in granularities):
        raise BadRequest("timestamp_granularities may hold 'word' and 'segment'.",
                         param="timestamp_granularities")
    if granularities and fmt != "verbose_json":
        raise BadRequest("timestamp_granularities needs response_format verbose_json.",
                         param="timestamp_granularities")
    language = _field(fields, "language") if task == "transcribe" else None
    temperature = _float_field(fields, "temperature", 0.0, 0.0, 1.0)
    try:
        return await submit_transcription(
            engine, data, _origin(request, _field(fields, "user") or ""),
            model=_field(fields, "model"), task=task, language=language or None,
            prompt=_field(fields, "prompt") or "", temperature=temperature,
            word_timestamps="word" in granularities,
            meta={**meta, "render": {"format": fmt, "granularities": granularities}})
    except (BadMedia, LimitExceeded) as e:
        if not e.data.get("param"):       # refused at intake: the upload itself is the problem
            e.data["param"] = "file"
        raise


async def transcript_response(request: web.Request, job, result: TranscriptResult) -> web.Response:
    options = job.meta.get("render") or {}
    return render_transcript(result, options.get("format", "json"), options.get("granularities", []),
                             {"X-Confab-Job-Id": job.id, "X-Confab-Model": result.model})


async def _transcribe(request: web.Request, task: str) -> web.StreamResponse:
    data, filename, fields = await read_upload(request)
    handle = await start_transcription(request, data, fields, task, {})
    if (_field(fields, "stream") or "").lower() == "true":
        return await _stream_transcript(request, handle, {"X-Confab-Job-Id": handle.id})
    return await transcript_response(request, handle.job, await result_of(handle))


async def _stream_transcript(request: web.Request, handle, headers: dict) -> web.StreamResponse:
    """OpenAI's streamed transcription: transcript.text.delta events, then transcript.text.done."""
    first = True

    def on_event(ev):
        nonlocal first
        if isinstance(ev, TranscriptSegment) and ev.text:
            yield {"type": "transcript.text.delta", "delta": ("" if first else " ") + ev.text}
            first = False

    def on_result(result: TranscriptResult):
        yield {"type": "transcript.text.done", "text": result.text}

    return await stream_job(request, handle, headers, on_event=on_event, on_result=on_result,
                            done_after_error=False)


async def transcriptions(request: web.Request) -> web.StreamResponse:
    return await _transcribe(request, "transcribe")


async def translations(request: web.Request) -> web.StreamResponse:
    return await _transcribe(request, "translate")


async def start_speech(request: web.Request, body: dict, meta: dict, stream: bool = False):
    """Check the request and queue its job (with `meta`). A job kept for later (`stream` off)
    cannot be sent as server-sent events."""
    engine = request.app[ENGINE]
    text = string(body, "input", required=True)
    fmt = audio.check_format(string(body, "response_format", "mp3") or "mp3")
    speed = number(body, "speed", 1.0, 0.25, 4.0)
    stream_format = string(body, "stream_format", "audio")
    if stream_format not in ("audio", "sse"):
        raise BadRequest("stream_format must be audio or sse.", param="stream_format")
    if stream_format == "sse" and not stream:
        raise BadRequest("A kept job's speech is fetched whole: leave stream_format out, or use "
                         "POST /v1/audio/speech to stream it.", param="stream_format")
    if stream_format == "sse" and fmt not in audio.STREAMED_FORMATS:
        raise BadRequest(f"Speech streams as {', '.join(audio.STREAMED_FORMATS)}; '{fmt}' is sent "
                         "whole: use stream_format 'audio' for it.", param="response_format")
    meta = {**meta, "sse": True} if stream_format == "sse" else meta
    return await submit_speech(engine, text, _origin(request, string(body, "user") or ""),
                               model=string(body, "model"), voice=_voice(body),
                               response_format=fmt, speed=speed, meta=meta)


def _speech_headers(job) -> dict:
    headers = {"X-Confab-Job-Id": job.id, "X-Confab-Model": job.model}
    if job.note:
        headers["X-Confab-Note"] = job.note.encode("ascii", "replace").decode()
    return headers


async def speech_response(request: web.Request, job, result: SpeechResult) -> web.Response:
    return web.Response(body=result.audio, headers={**_speech_headers(job), "Content-Type": result.mime_type})


async def speech(request: web.Request) -> web.StreamResponse:
    handle = await start_speech(request, await read_json(request), {}, stream=True)
    if handle.job.response_format in audio.STREAMED_FORMATS:
        return await _stream_speech(request, handle, _speech_headers(handle.job),
                                    bool(handle.job.meta.get("sse")))
    return await speech_response(request, handle.job, await result_of(handle))


def _voice(body: dict) -> str | None:
    """A voice name, or OpenAI's custom-voice object {"id": NAME}."""
    voice = body.get("voice")
    if isinstance(voice, dict):
        if not isinstance(voice.get("id"), str):
            raise BadRequest("'voice' must be a voice name or an object with an 'id' string.",
                             param="voice")
        return voice["id"]
    return string(body, "voice")


async def _stream_speech(request: web.Request, handle, headers: dict, sse: bool) -> web.StreamResponse:
    """Each sentence sent as soon as it is spoken: the audio's bytes as a chunked body, or
    OpenAI's server-sent events (speech.audio.delta with base64 audio, then speech.audio.done)."""
    job = handle.job
    kind = "text/event-stream" if sse else audio.mime_type(job.response_format)
    response = web.StreamResponse(headers={**headers, "Content-Type": kind, "Cache-Control": "no-cache"})

    def event(data: dict) -> bytes:
        return b"data: " + json.dumps(data).encode() + b"\n\n"

    async def write(data: bytes) -> None:
        if not response.prepared:
            await response.prepare(request)
        await response.write(event({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()})
                             if sse else data)
    try:
        first = True
        async for ev in handle:
            if isinstance(ev, SpeechChunk):
                pcm = audio.Pcm(ev.pcm, ev.sample_rate)
                if not first:
                    pcm = audio.silence(SENTENCE_PAUSE_S, pcm.rate) + pcm
                await write(await asyncio.to_thread(audio.encode_piece, pcm, job.response_format,
                                                    job.speed, first))
                first = False
        await handle.result()   # raises the job's error: before the first piece, as a proper error
    except ConfabError as e:
        if not response.prepared:
            raise
        if sse:
            await response.write(event(error_body(e.message, e.kind, e.code)))
        await response.write_eof()
        return response
    except (ConnectionResetError, asyncio.CancelledError):
        await handle.cancel()
        raise
    if not response.prepared:
        await response.prepare(request)
    if sse:
        await response.write(event({"type": "speech.audio.done"}))
    await response.write_eof()
    return response


def setup(app: web.Application) -> None:
    app[STREAMED_UPLOADS].update({"/v1/audio/transcriptions", "/v1/audio/translations"})
    app.router.add_post("/v1/audio/transcriptions", transcriptions)
    app.router.add_post("/v1/audio/translations", translations)
    app.router.add_post("/v1/audio/speech", speech)
