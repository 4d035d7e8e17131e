"""Confab's engine: submit typed jobs, get a handle to await, stream or cancel."""
from .config import ConfigError, Settings
from .engine import Engine
from .errors import (BadMedia, BadRequest, ConfabError, EngineBusy, JobCancelled, JobTimeout,
                     LimitExceeded, PromptTooLong, UnknownModel, UserError, UserQueueFull)
from .handle import JobHandle
from .jobs import (ChatJob, ChatMessage, ChatResult, Job, Origin, Progress, Queued, Started,
                   Token, Usage)
from .priority import priority_class

__all__ = [
    "Engine", "Settings", "ConfigError", "JobHandle", "Job", "ChatJob", "ChatMessage",
    "ChatResult", "Origin", "Usage", "Queued", "Started", "Token", "Progress", "priority_class",
    "ConfabError", "UserError", "BadRequest", "BadMedia", "UnknownModel", "LimitExceeded",
    "PromptTooLong", "EngineBusy", "UserQueueFull", "JobCancelled", "JobTimeout",
]
