"""Speech commands every door shares: /transcribe, /speak, and voice notes answered aloud.

`/transcribe` and `/voicenote` take the audio attached to the message; on the console, a
file path (only there: a chat message must never read the server's files). A voice message
(a Slack audio clip, a Discord voice message, `/voicenote` on the console) is answered by
`answer_voice_note`, the one voice-note handler: the engine's pipeline (transcribe -> chat ->
speak, each stage a job at the asker's priority), one message with the transcript and the
answer as it streams (its Cancel button cancels whichever stage runs), then the answer aloud.
Each door gives only its own words and formats (`VoiceNoteWords`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from bots.common.commands import Commands, Request
from bots.common.reply import Reply
from engine import ConfabError, LimitExceeded, Token, UserError
from engine.flows.voice_note import StageStarted, Transcript, VoiceNote, voice_note
from engine.media.audio import EXTENSIONS as AUDIO_EXT
from engine.messages import explain
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
                          voice=True, duration_s=result.duration_s, waveform=result.waveform)


@dataclass(frozen=True)
class VoiceNoteWords:
    """How a door shows a voice note; the steps are the same for every door."""
    heard: str = "🎙️ {}\n\n"            # the transcript, at the head of the answer's message
    format: str = VOICE_REPLY_FORMAT     # the answer aloud, in what the door plays inline
    filename: str = "answer.ogg"
    title: str = "Answer"
    stopped_inline: bool = False         # a stage that failed is explained in the same message


async def answer_voice_note(cmds: Commands, request: Request, data: bytes, reply: Reply,
                            words: VoiceNoteWords = VoiceNoteWords(), *, asked: str = "",
                            pipelines: dict[str, VoiceNote] | None = None) -> None:
    """A voice note: the transcript and the answer streamed into one message, then the answer
    aloud. `asked`: words that came with the recording, put before its transcript. `pipelines`
    (first stage's job id -> running note) is where the door's Cancel button finds it. Raises
    ConfabError for the door's guard to put into words (unless `words.stopped_inline`)."""
    def messages_for(transcript: str):
        question = f"{asked}\n\n{transcript}".strip() if asked else transcript
        return cmds.conversation_messages(request, question)

    note = await voice_note(cmds.engine, data, request.origin, conversation=request.conversation,
                            messages_for=messages_for, response_format=words.format)
    events = note.events()
    first = await anext(events, None)
    if not isinstance(first, StageStarted):
        await note.result()           # raises what stopped the pipeline before its first stage
        return
    key = first.job_id
    if pipelines is not None:
        pipelines[key] = note

    async def shown():
        """The transcript, then the answer's tokens; ends when the whole pipeline has, so the
        final edit (and the Cancel button's removal) comes after the speech too."""
        said = False
        async for event in events:
            if isinstance(event, Transcript):
                said = True
                yield words.heard.format(event.text.strip())
            elif isinstance(event, Token):
                said = True
                yield event.text
        if words.stopped_inline:
            try:
                await note.result()
            except ConfabError as e:
                yield ("\n\n" if said else "") + explain(e)

    try:
        await reply.stream(shown(), status=f"queued ({key})")
        try:
            result = await note.result()
        except ConfabError:
            if words.stopped_inline:
                return                # already said in the message
            raise
    except BaseException:
        await note.cancel()
        raise
    finally:
        if pipelines is not None:
            pipelines.pop(key, None)
    if result.note:
        await reply.say(f"🔊 {result.note}")
    if result.audio:
        await reply.send_file(result.audio, words.filename, title=words.title, voice=True,
                              duration_s=result.duration_s, waveform=result.waveform)


async def cmd_voicenote(cmds: Commands, request: Request, arg: str, reply: Reply) -> None:
    data, _ = await audio_of(request, arg, cmds.engine.settings.max_audio_bytes)
    await answer_voice_note(cmds, request, data, reply)


def register_commands(commands: Commands) -> None:
    commands.register("transcribe", cmd_transcribe)
    commands.register("speak", cmd_speak)
    commands.register("voicenote", cmd_voicenote)
