"""The voice-clip path: a Slack audio clip in, the transcript, the answer and the answer aloud out.

One function, so that it can hand over to the engine's voice-note pipeline when that lands
(transcribe -> chat -> speak, each a job of its own with the asker's priority). Until then it
runs the same three stages here with the engine's speech jobs. The clip's container (webm from
the desktop, m4a from phones) is never relied on: ffmpeg probes the bytes.
"""
from __future__ import annotations

import dataclasses
import logging

from ..common.commands import Commands, Request
from .files import SharedFile, SlackFiles
from .reply import ThreadReply

log = logging.getLogger(__name__)

SPOKEN_FORMAT = "mp3"     # Slack plays mp3 inline on every client


async def answer_voice_clip(commands: Commands, files: SlackFiles, request: Request,
                            clip: SharedFile, reply: ThreadReply) -> None:
    """Download the clip with the bot token, transcribe it, answer in the thread, then attach
    the answer as audio. Raises ConfabError for the caller to put into words."""
    from engine import speech   # the speech modality; a missing backend says what to install

    engine = commands.engine
    settings = engine.settings
    data = await files.download(clip, settings.max_audio_bytes)
    note = await reply.say("🎧 Listening…")
    heard = await speech.submit_transcription(engine, data, request.origin)
    transcript = (await heard.result()).text.strip()
    if not transcript:
        await reply.update(note, "🎧 I couldn't make out any words in that clip.")
        return
    await reply.update(note, f"🎧 “{transcript}”")
    question = f"{request.text}\n\n{transcript}".strip() if request.text else transcript
    asked = dataclasses.replace(request, text=question)
    answer = (await commands.answer(asked, question, reply)).strip()
    if not answer:
        return
    spoken = _speakable(answer, settings.max_speech_chars)
    voiced = await speech.submit_speech(engine, spoken, request.origin, response_format=SPOKEN_FORMAT)
    result = await voiced.result()
    await reply.send_file(result.audio, f"answer.{result.format}", title="The answer, spoken",
                          voice=True, duration_s=result.duration_s)


def _speakable(text: str, limit: int) -> str:
    """The answer without Markdown marks, cut at a sentence end within the speech limit."""
    plain = text.replace("**", "").replace("__", "").replace("`", "").replace("#", "")
    if len(plain) <= limit:
        return plain
    cut = plain[:limit]
    end = max(cut.rfind(". "), cut.rfind("! "), cut.rfind("? "), cut.rfind("\n"))
    return cut[: end + 1] if end > limit // 2 else cut
