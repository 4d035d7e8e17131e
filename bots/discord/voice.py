"""Voice messages: Discord's native voice-message format, and how a voice note looks here.

discord.py 2.7 has no public call for sending a voice message (flag 8192, no content, exactly
one ogg/opus attachment with `duration_secs` and a base64 `waveform`), so `send_voice_message`
builds the multipart request on discord.py's HTTP layer (`HTTPClient.request(Route, files=,
form=)`), which keeps its rate-limit handling and retries. `check_http_layer` fails loudly when
an upgrade moves that layer; a test calls it.
"""
from __future__ import annotations

import base64
import inspect
import io
import json
import logging

import discord
from discord.http import Route

from bots.common.speech import VoiceNoteWords
from engine.media import audio

log = logging.getLogger(__name__)

VOICE_MESSAGE_FLAG = 1 << 13
VOICE_FILENAME = "voice-message.ogg"
MAX_WAVEFORM = audio.WAVEFORM_POINTS     # Discord's clients send at most 256 one-byte samples
# a voice note's transcript heads the answer's message; the answer aloud is a voice message
VOICE_NOTE = VoiceNoteWords(heard="🎙️ *{}*\n\n", format="ogg", filename=VOICE_FILENAME, title="")


# -- the format ------------------------------------------------------------------------------

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
