"""The chat doors' own words (Slack, Discord, the console): their command list, who and where they
refuse before any job, and what they say after a restart."""
from __future__ import annotations

HELP = """\
Commands:
  /ask QUESTION      ask the assistant (plain text works too)
  /speak TEXT        answer aloud
  /transcribe FILE   turn speech into text
  /voicenote FILE    answer a recording, in text and aloud
  /translate [fr,de:] TEXT  translate into one or several languages
  /promo             a promotion: text and poster (asks for what it needs)
  /write KIND TOPIC  a product description, announcement or story
  /imagine PROMPT    make a picture
  /queue             your jobs, their place in line and ETA
  /cancel [JOB]      cancel your last job, or the one named
  /models            installed models
  /reset             forget this conversation
  /help              this list"""

# Refusals at the door, before any job: who may ask, where (bots/common/access.py and
# bots/discord/access.py, which has Discord's own: servers, roles).
NOT_ALLOWED_USER = "🚫 Sorry, I'm not set up to answer you. An admin can add you to the allowed users."
NOT_THIS_CHANNEL = "🚫 I don't answer in this channel. Ask me in a direct message or an allowed channel."


def too_many_requests(per_minute: int, wait_s: float) -> str:
    return (f"⏳ You've sent {per_minute} requests in the last minute, my limit per "
            f"person. Try again in about {wait_s:.0f} s.")


# After a restart, for a job that was the first step of several (a voice clip's transcript, the
# text read from an image): the steps after it were chained by the process that died.
RESTARTED_MID_WAY = "🔁 I restarted while working on that; please send it again."
