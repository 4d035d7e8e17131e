"""Speech commands every adapter shares: /transcribe, /speak, and voice notes answered aloud.

`/transcribe` and `/voicenote` take the audio attached to the message; on the console, a
file path (only there: a chat message must never read the server's files). Platform adapters
call `answer_voice_note` when a voice message arrives.
"""
from __future__ import annotations

import logging
from pathlib import Path

from bots.common.commands import Commands, Request
from bots.common.reply import Reply
from engine import LimitExceeded, Token, UserError
from engine.flows.voice_note import Transcript, voice_note
from engine.media.audio import EXTENSIONS as AUDIO_EXT
from engine.work.speech import submit_speech, submit_transcription

log = logging.getLogger(__name__)

VOICE_REPLY_FORMAT = "ogg"      # ogg/opus: what Discord and Slack play as a voice message


async def audio_of(request: Request, arg: str, max_bytes: int) -> tuple[bytes, str]:
    """The audio a command refers to: the first attachment, or on the console a file path."""
    for att in request.attachments:
        if isinstance(att, (bytes, bytearray)):
            return bytes(att), "audio"
        read = getattr(att, "read", None)
        if read is not None:
            size = getattr(att, "size", 0) or 0
            if size > max_bytes:
                raise LimitExceeded("The audio file", f"{size / 2**20:.1f}", f"{max_bytes / 2**20:.1f}", "MB")
            data = await read()
            return data, getattr(att, "filename", "") or "audio"
    if arg and request.origin.platform == "console":
        path = Path(arg).expanduser()
        if not path.is_file():
            raise UserError(f"There is no file {path}.")
        if path.stat().st_size > max_bytes:
            raise LimitExceeded("The audio file", f"{path.stat().st_size / 2**20:.1f}",
                                f"{max_bytes / 2**20:.1f}", "MB")
        return path.read_bytes(), path.name
    if arg:
        raise UserError("Attach the recording to the message; I cannot open files by name here.")
    raise UserError("Attach a recording (or on the console give a file path), e.g. /transcribe note.ogg")


async def cmd_transcribe(cmds: Commands, request: Request, arg: str, reply: Reply) -> None:
    data, _ = await audio_of(request, arg, cmds.engine.settings.max_audio_bytes)
    handle = await submit_transcription(cmds.engine, data, request.origin)
    result = await handle.result()
    await reply.say(f"📝 {result.text}" if result.text else "📝 (I heard no words.)")


async def cmd_speak(cmds: Commands, request: Request, arg: str, reply: Reply) -> None:
    if not arg.strip():
        raise UserError("Give me something to say, like: /speak good morning, team!")
    handle = await submit_speech(cmds.engine, arg, request.origin, response_format=VOICE_REPLY_FORMAT)
    if handle.job.note:
        await reply.say(f"🔊 {handle.job.note}")
    result = await handle.result()
    await reply.send_file(result.audio, f"speech.{AUDIO_EXT[result.format]}", title="Speech",
                          voice=True, duration_s=result.duration_s)


async def answer_voice_note(cmds: Commands, request: Request, data: bytes, reply: Reply) -> None:
    """A voice note: say what was heard, stream the answer as text, then send it aloud."""
    note = await voice_note(cmds.engine, data, request.origin, conversation=request.conversation,
                            response_format=VOICE_REPLY_FORMAT)

    async def answer_tokens():
        async for ev in note:
            if isinstance(ev, Transcript):
                await reply.say(f"🎙️ {ev.text}")
            elif isinstance(ev, Token):
                yield ev.text

    try:
        await reply.stream(answer_tokens())
        result = await note.result()
    except BaseException:
        await note.cancel()
        raise
    if result.note:
        await reply.say(f"🔊 {result.note}")
    if result.audio:
        await reply.send_file(result.audio, f"answer.{AUDIO_EXT[result.format]}", title="Answer",
                              voice=True, duration_s=result.duration_s)


async def cmd_voicenote(cmds: Commands, request: Request, arg: str, reply: Reply) -> None:
    data, _ = await audio_of(request, arg, cmds.engine.settings.max_audio_bytes)
    await answer_voice_note(cmds, request, data, reply)


def register_commands(commands: Commands) -> None:
    commands.register("transcribe", cmd_transcribe)
    commands.register("speak", cmd_speak)
    commands.register("voicenote", cmd_voicenote)
