"""Confab's engine: submit typed jobs, get a handle to await, stream or cancel."""
from engine.config import ConfigError, Settings
from engine.errors import (
                     BadMedia,
                     BadRequest,
                     ConfabError,
                     EngineBusy,
                     JobCancelled,
                     JobTimeout,
                     LimitExceeded,
                     PromptTooLong,
                     UnknownModel,
                     UserError,
                     UserQueueFull,
)
from engine.jobs import ChatJob, ChatMessage, ChatResult, Job, Origin, Progress, Queued, Started, Token, Usage
from engine.priority import priority_class
from engine.runtime.engine import Engine
from engine.runtime.handle import JobHandle

__all__ = [
    "Engine", "Settings", "ConfigError", "JobHandle", "Job", "ChatJob", "ChatMessage",
    "ChatResult", "Origin", "Usage", "Queued", "Started", "Token", "Progress", "priority_class",
    "ConfabError", "UserError", "BadRequest", "BadMedia", "UnknownModel", "LimitExceeded",
    "PromptTooLong", "EngineBusy", "UserQueueFull", "JobCancelled", "JobTimeout",
]
