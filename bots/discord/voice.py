"""Voice messages: Discord's native voice-message format, and the voice-note path.

discord.py 2.7 has no public call for sending a voice message (flag 8192, no content, exactly
one ogg/opus attachment with `duration_secs` and a base64 `waveform`), so `send_voice_message`
builds the multipart request on discord.py's HTTP layer (`HTTPClient.request(Route, files=,
form=)`), which keeps its rate-limit handling and retries. `check_http_layer` fails loudly when
an upgrade moves that layer; a test calls it.
"""
from __future__ import annotations

import asyncio
import base64
import inspect
import io
import json
import logging
import math

import discord
from discord.http import Route

from engine import Settings, Token
from engine.flows.voice_note import StageStarted, Transcript, messages_with, voice_note
from engine.media import audio

log = logging.getLogger(__name__)

VOICE_MESSAGE_FLAG = 1 << 13
VOICE_FILENAME = "voice-message.ogg"
MAX_WAVEFORM = 256          # Discord's clients send at most 256 one-byte samples
WAVEFORM_PER_SECOND = 10


# -- the format ------------------------------------------------------------------------------

def waveform(samples: bytes, rate: int, max_points: int = MAX_WAVEFORM) -> bytes:
    """Discord's waveform of 16-bit mono PCM: one byte (0-255) of loudness (RMS, scaled to the
    loudest point) per tenth of a second, at most `max_points` bytes."""
    import numpy as np
    x = np.frombuffer(samples[: len(samples) - len(samples) % 2], dtype="<i2").astype(np.float32)
    if not len(x):
        return bytes(1)
    points = max(1, min(max_points, math.ceil(len(x) / rate * WAVEFORM_PER_SECOND)))
    rms = np.array([math.sqrt(float(np.mean(c * c))) if len(c) else 0.0 for c in np.array_split(x, points)])
    top = float(rms.max()) or 1.0
    return bytes(int(round(255 * v / top)) for v in rms)


async def voice_metadata(ogg: bytes, settings: Settings) -> tuple[float, bytes]:
    """(true duration in seconds, waveform) of an encoded clip, by decoding it."""
    pcm = await asyncio.to_thread(audio.decode, ogg, max(len(ogg), 1), settings.max_audio_seconds * 4,
                                  settings.ffmpeg_timeout_s, 16_000, True)
    return pcm.duration_s, waveform(pcm.data, pcm.rate)


def check_http_layer() -> None:
    """Fail loudly if the discord.py internals this adapter builds on have moved."""
    import discord.gateway
    import discord.http
    problems = []
    if not isinstance(getattr(discord.http.Route, "BASE", None), str):
        problems.append("discord.http.Route.BASE is not a string")
    gw = getattr(getattr(discord.gateway, "DiscordWebSocket", None), "DEFAULT_GATEWAY", None)
    if gw is None or type(gw).__module__.split(".")[0] != "yarl":
        problems.append("discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY is not a yarl.URL")
    params = inspect.signature(discord.http.HTTPClient.request).parameters
    for name in ("route", "files", "form"):
        if name not in params:
            problems.append(f"HTTPClient.request has no '{name}' parameter")
    route = discord.http.Route("POST", "/channels/{channel_id}/messages", channel_id=1)
    if not route.url.endswith("/channels/1/messages"):
        problems.append(f"Route builds {route.url!r}")
    if not hasattr(discord.File, "reset") or not hasattr(discord.File, "fp"):
        problems.append("discord.File lost reset()/fp, which retries of multipart requests need")
    if problems:
        raise AssertionError(f"discord.py {discord.__version__} moved what the Discord adapter uses:\n  - "
                             + "\n  - ".join(problems))


async def send_voice_message(http: discord.http.HTTPClient, channel_id: int | str, ogg: bytes,
                             duration_s: float, wave: bytes, reply_to: int | str | None = None) -> dict:
    """POST a native voice message; returns Discord's message object."""
    if not 0 < len(wave) <= MAX_WAVEFORM:
        raise ValueError("a voice message's waveform has 1 to 256 samples")
    payload: dict = {
        "flags": VOICE_MESSAGE_FLAG,
        "attachments": [{"id": "0", "filename": VOICE_FILENAME,
                         "duration_secs": round(max(duration_s, 0.01), 3),
                         "waveform": base64.b64encode(wave).decode()}],
    }
    if reply_to is not None:
        payload["message_reference"] = {"message_id": str(reply_to), "fail_if_not_exists": False}
        payload["allowed_mentions"] = {"replied_user": False, "parse": []}
    file = discord.File(io.BytesIO(ogg), filename=VOICE_FILENAME)
    form = [{"name": "payload_json", "value": json.dumps(payload)},
            {"name": "files[0]", "value": file.fp, "filename": file.filename, "content_type": "audio/ogg"}]
    route = Route("POST", "/channels/{channel_id}/messages", channel_id=channel_id)
    try:
        return await http.request(route, files=[file], form=form)
    finally:
        file.close()


# -- the voice-note path ----------------------------------------------------------------------

async def answer_voice_note(adapter, request, audio_bytes: bytes, reply) -> None:
    """Answer a voice note through the shared pipeline (transcribe -> chat -> speak): one text
    message with the transcript and the answer as it streams, then the answer as a voice
    message. The conversation's memory is the reply chain when the adapter read one."""
    engine = adapter.engine
    settings: Settings = engine.settings
    history = request.history
    if history is None:
        history = await engine.history(request.conversation, settings.history_messages)
    note = await voice_note(engine, audio_bytes, request.origin, conversation=request.conversation,
                            messages_for=messages_with(settings.system_prompt,
                                                       history[-settings.history_messages:]),
                            response_format="ogg")
    events = note.events()
    first = await anext(events, None)
    if not isinstance(first, StageStarted):
        await note.result()           # raises what stopped the pipeline before its first stage
        return
    adapter.pipelines[first.job_id] = note      # the Cancel button cancels the whole note

    async def transcript_then_answer():
        async for event in events:
            if isinstance(event, Transcript):
                yield f"🎙️ *{event.text.strip()}*\n\n"
            elif isinstance(event, Token):
                yield event.text

    try:
        await reply.stream(transcript_then_answer(), status=f"queued ({first.job_id})")
        result = await note.result()
    except BaseException:
        await note.cancel()
        raise
    finally:
        adapter.pipelines.pop(first.job_id, None)
    if result.note:
        await reply.say(f"🔊 {result.note}")
    if result.audio:
        await reply.send_file(result.audio, VOICE_FILENAME, voice=True, duration_s=result.duration_s)
