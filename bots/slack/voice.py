"""The voice-clip path: a Slack audio clip in, the transcript, the answer and the answer aloud out.

The clip goes through the engine's voice-note pipeline (transcribe -> chat -> speak, each stage
a job of its own at the asker's priority). One message in the thread shows the transcript and
the answer as it streams, with a Cancel button that cancels whichever stage is queued or
running; then the spoken answer is uploaded into the same thread. The clip's container (webm
from the desktop, m4a from phones) is never relied on: ffmpeg probes the bytes.
"""
from __future__ import annotations

import logging
from typing import AsyncIterator

from bots.common.commands import Commands, Request
from bots.slack.files import SharedFile, SlackFiles
from bots.slack.reply import ThreadReply
from engine import ConfabError, Token
from engine.flows.voice_note import StageStarted, Transcript, voice_note
from engine.media.audio import EXTENSIONS as AUDIO_EXT
from engine.messages import explain

log = logging.getLogger(__name__)

SPOKEN_FORMAT = "mp3"     # Slack plays mp3 inline on every client


async def answer_voice_clip(commands: Commands, files: SlackFiles, request: Request,
                            clip: SharedFile, reply: ThreadReply, pipelines: dict | None = None) -> None:
    """Download the clip with the bot token, run the voice-note pipeline on it, and answer in the
    thread. `pipelines` (job id of the first stage -> running pipeline) is where the adapter's
    Cancel button finds it. Raises ConfabError for the caller to put into words."""

    engine = commands.engine
    data = await files.download(clip, engine.settings.max_audio_bytes)

    def messages_for(transcript: str):
        question = f"{request.text}\n\n{transcript}".strip() if request.text else transcript
        return commands.conversation_messages(request, question)

    note = await voice_note(engine, data, request.origin, conversation=request.conversation,
                            messages_for=messages_for, response_format=SPOKEN_FORMAT)
    events = note.events()
    first = await anext(events, None)
    if not isinstance(first, StageStarted):
        await note.result()           # raises what stopped the pipeline before its first stage
        return
    key = first.job_id
    reply.pipeline = (key, note)      # the message keeps its Cancel button while any stage runs
    if pipelines is not None:
        pipelines[key] = note

    async def shown() -> AsyncIterator[str]:
        """The transcript, then the answer's tokens; ends when the whole pipeline has, so the
        final edit (and the Cancel button's removal) comes after the speech too."""
        said = False
        async for event in events:
            if isinstance(event, Transcript):
                said = True
                yield f"🎧 “{event.text.strip()}”\n\n"
            elif isinstance(event, Token):
                said = True
                yield event.text
        try:
            await note.result()
        except ConfabError as e:      # the same message says why it stopped
            yield ("\n\n" if said else "") + explain(e)

    try:
        await reply.stream(shown(), status=f"queued ({key})")
        try:
            result = await note.result()
        except ConfabError:
            return                    # already said in the message
    except BaseException:
        await note.cancel()
        raise
    finally:
        if pipelines is not None:
            pipelines.pop(key, None)
    if result.note:
        await reply.say(f"🔊 {result.note}")
    if result.audio:
        await reply.send_file(result.audio, f"answer.{AUDIO_EXT[result.format]}",
                              title="The answer, spoken", voice=True, duration_s=result.duration_s)
