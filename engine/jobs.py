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
    # an assistant turn's tool calls, or the call a `tool` message answers (OpenAI's shapes)
    tool_calls: list[dict] | None = None
    tool_call_id: str | None = None
    name: str | None = None

    def wire(self) -> dict:
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = self.tool_calls
        if self.tool_call_id:
            out["tool_call_id"] = self.tool_call_id
        if self.name:
            out["name"] = self.name
        return out


@dataclass
class ChatJob(Job):
    """A chat turn. Sampling fields left None take the model's own defaults (its card, its
    file's metadata, the operator's overrides): no door decides them."""
    kind: ClassVar[str] = "chat"
    messages: list[ChatMessage] = field(default_factory=list)
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    stop: list[str] = field(default_factory=list)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repeat_penalty: float | None = None
    seed: int | None = None
    conversation: str = ""      # the thread it continues: its runner slot keeps that prefix
    # OpenAI fields passed to the runner as they are: tools, tool_choice, response_format,
    # logprobs, top_logprobs (checked by the API before they get here)
    options: dict = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        data = super().to_record()
        data["messages"] = [{k: v for k, v in m.items() if v is not None or k in ("role", "content")}
                            for m in data["messages"]]
        return data


@dataclass
class CompletionJob(Job):
    """The legacy text completion (`/v1/completions`): a raw prompt continued, no template."""
    kind: ClassVar[str] = "completion"
    prompt: str = ""
    suffix: str | None = None
    echo: bool = False
    logprobs: int | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    stop: list[str] = field(default_factory=list)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repeat_penalty: float | None = None
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
    tool_calls: list | None = None      # OpenAI's streamed tool-call fragments, as they came
    logprobs: list | None = None        # the tokens' log-probabilities, when asked for


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
    tool_calls: list[dict] = field(default_factory=list)
    logprobs: list[dict] | None = None


JOB_TYPES: dict[str, type[Job]] = {"chat": ChatJob, "completion": CompletionJob}


def register_job_type(cls: type[Job]) -> type[Job]:
    JOB_TYPES[cls.kind] = cls
    return cls
