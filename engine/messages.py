"""The engine's words for people: what each of its errors means, said once, here.

Doors call `explain(error)` and post what it returns; the API uses `error.message`. The words a
door says about itself (its commands, its refusals) are the door's own.
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


# Said before an answer about an image when no vision model is installed (OCR read its text).
OCR_ONLY_NOTE = ("(No vision model is installed here, so I read only the text in the image; "
                 "I cannot see pictures, layout or colours.)\n\n")
