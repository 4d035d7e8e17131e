"""Typed jobs, the events they stream, and their results.

A job says who asked (its `Origin`), which model it wants, and what to do. Every kind of work
is a dataclass of its own; the scheduler only reads the fields of `Job`.
"""
from __future__ import annotations

import dataclasses
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class Origin:
    platform: str = "api"          # slack, discord, console, voice, api
    user: str = "anonymous"
    channel: str = ""
    thread: str = ""
    is_dm: bool = False
    is_admin: bool = False
    is_live_voice: bool = False
    background: bool = False

    @property
    def user_key(self) -> str:
        return f"{self.platform}:{self.user}"


def new_job_id() -> str:
    return "job_" + uuid.uuid4().hex[:20]


@dataclass
class Job:
    """What the scheduler sees of every job."""
    kind: ClassVar[str] = "job"
    model: str = ""
    origin: Origin = field(default_factory=Origin)
    priority: int | None = None     # None: decided from the origin
    timeout_s: float | None = None  # None: the engine's default
    id: str = field(default_factory=new_job_id)
    created_at: float = field(default_factory=time.time)
    # The caller's own notes, kept with the job in the store (an API endpoint, where a reply
    # goes), so that a job resumed after a restart still knows how to answer.
    meta: dict = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["kind"] = self.kind
        return data


@dataclass
class ChatMessage:
    role: str
    content: str


@dataclass
class ChatJob(Job):
    kind: ClassVar[str] = "chat"
    messages: list[ChatMessage] = field(default_factory=list)
    max_tokens: int | None = None
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    stop: list[str] = field(default_factory=list)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repeat_penalty: float = 1.0
    seed: int | None = None


# Events streamed while a job runs.

@dataclass(frozen=True)
class Queued:
    position: int
    eta_s: float


@dataclass(frozen=True)
class Started:
    model: str
    device: str


@dataclass(frozen=True)
class Token:
    text: str


@dataclass(frozen=True)
class Progress:
    step: int
    total: int


# Results.

@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class ChatResult:
    text: str
    finish_reason: str  # stop | length
    usage: Usage
    model: str
    trimmed_messages: int = 0


JOB_TYPES: dict[str, type[Job]] = {"chat": ChatJob}


def register_job_type(cls: type[Job]) -> type[Job]:
    JOB_TYPES[cls.kind] = cls
    return cls
