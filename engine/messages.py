"""Words for people: every failure a user can cause, said once, here.

Adapters call `explain(error)` and post what it returns; the API uses `error.message`.
"""
from __future__ import annotations

from engine.errors import (
    BackendMissing,
    BadImage,
    BadMedia,
    BudgetExhausted,
    ConfabError,
    EngineBusy,
    InfrastructureError,
    JobCancelled,
    JobTimeout,
    LimitExceeded,
    ModelDoesNotFit,
    PromptTooLong,
    RateLimited,
    UnknownModel,
    UserError,
    UserQueueFull,
)


def _wait(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


def explain(error: BaseException) -> str:
    if isinstance(error, RateLimited):
        return f"🚦 {error.message} Try again in about {_wait(error.retry_after)}."
    if isinstance(error, BudgetExhausted):
        return f"🪫 {error.message} It resets in about {_wait(error.retry_after)}."
    if isinstance(error, UserQueueFull):
        return f"⏳ {error.message} (try again in about {error.retry_after:.0f} s)"
    if isinstance(error, EngineBusy):
        return f"⏳ I'm busy right now: {error.message} Try again in about {error.retry_after:.0f} s."
    if isinstance(error, JobCancelled):
        return "🛑 Cancelled."
    if isinstance(error, JobTimeout):
        return f"⌛ {error.message}"
    if isinstance(error, PromptTooLong):
        return f"✂️ That message is too long for the model: {error.message} Please shorten it."
    if isinstance(error, LimitExceeded):
        return f"✂️ Over a limit: {error.message}"
    if isinstance(error, UnknownModel):
        return f"❓ {error.message} Use /models to see what is installed."
    if isinstance(error, BadImage):
        return f"🖼️ {error.message}"
    if isinstance(error, BadMedia):
        return f"🎧 {error.message}"
    if isinstance(error, UserError):
        return f"⚠️ {error.message}"
    if isinstance(error, BackendMissing):
        return f"🧩 That feature is not installed here: {error.message}"
    if isinstance(error, ModelDoesNotFit):
        return f"💾 {error.message} Ask an admin to free memory or pick a smaller model."
    if isinstance(error, (InfrastructureError, ConfabError)):
        return f"💥 Something went wrong on my side: {error.message} An admin can check the logs."
    return "💥 Something went wrong on my side. An admin can check the logs."


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


# The console's /reroll before any picture was drawn.
# The push-to-talk loop's keys (voice/keys.py): why holding a key cannot work here.
PTT_NO_PYNPUT = "pynput is not installed (pip install 'confab-bot[voice]')"
PTT_NO_DISPLAY = ("there is no X display to hear the key on (DISPLAY is not set; on Wayland "
                  "without XWayland, PYNPUT_BACKEND=uinput needs root)")


def ptt_no_keyboard(detail: str) -> str:
    return f"pynput cannot listen to the keyboard ({detail})"


def ptt_fallback(reason: str) -> str:
    return (f"Hold-to-talk is not available: {reason}. Using Enter instead: press Enter to start "
            "talking and Enter again to send (a pause in speech sends it too).")


def ptt_bad_key(name: str) -> str:
    return (f"'{name}' is not a key pynput knows; use a key name such as ctrl_r, alt_r, f8, "
            "scroll_lock or space, or a single character.")


NOTHING_TO_REROLL = "There is no picture to draw again yet: start with /imagine PROMPT."

# Said before an answer about an image when no vision model is installed (OCR read its text).
OCR_ONLY_NOTE = ("(No vision model is installed here, so I read only the text in the image; "
                 "I cannot see pictures, layout or colours.)\n\n")


# Refusals at the door, before any job: who may ask, where (bots/common/access.py,
# bots/discord/access.py).
NOT_ALLOWED_USER = "🚫 Sorry, I'm not set up to answer you. An admin can add you to the allowed users."
NOT_THIS_CHANNEL = "🚫 I don't answer in this channel. Ask me in a direct message or an allowed channel."
NO_DMS = "🚫 I don't answer direct messages here. Ask me in a server channel."
ROLES_UNSEEN_IN_DM = ("🚫 I can only answer people with an allowed role, which I can't see in a "
                      "direct message. Ask me in the server.")
NOT_THIS_SERVER = "🚫 I'm not set up to answer in this server."
NOT_ALLOWED_ROLE = "🚫 Sorry, I only answer people with one of the allowed roles."


def too_many_requests(per_minute: int, wait_s: float) -> str:
    return (f"⏳ You've sent {per_minute} requests in the last minute, my limit per "
            f"person. Try again in about {wait_s:.0f} s.")

# After a restart, for a job that was the first step of several (a voice clip's transcript, the
# text read from an image): the steps after it were chained by the process that died.
RESTARTED_MID_WAY = "🔁 I restarted while working on that; please send it again."
