"""How each model format is loaded, and how each kind of job runs on a loaded model.

Loaders and executors are blocking and run in worker threads (the memory manager calls the
loaders, the engine the executors). A later modality adds itself with `register_loader` and
`register_executor`.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Callable

from models.registry import InstalledModel

from .config import Settings
from .errors import BackendMissing, BadRequest, PromptTooLong
from .jobs import ChatJob, ChatResult, Job, Token, Usage
from .memory import process_rss_bytes

log = logging.getLogger(__name__)


@dataclass
class RunContext:
    """What an executor may do besides computing: stream events and check for cancel."""
    emit: Callable[[object], None]
    cancelled: Callable[[], bool]
    device: str
    settings: Settings


Loader = Callable[[InstalledModel, str, Settings], Any]
Executor = Callable[[Any, Job, RunContext], Any]

LOADERS: dict[str, Loader] = {}
# Formats whose loader also takes `room`: the bytes the memory manager's budget leaves on the
# device, from which it chooses memory-saving settings (diffusers).
BUDGET_AWARE: set[str] = set()
EXECUTORS: dict[str, Executor] = {}
JOB_KIND_TO_MODEL_KIND: dict[str, str] = {"chat": "chat"}

# Modules that register loaders and executors for more kinds of work (imported by the engine).
MODALITIES: list[str] = [
    "engine.images",
    "engine.speech",
    "engine.embeddings",
]


def load_modalities() -> None:
    import importlib
    for name in MODALITIES:
        importlib.import_module(name)


def register_loader(fmt: str, budget_aware: bool = False):
    def deco(fn: Loader) -> Loader:
        LOADERS[fmt] = fn
        if budget_aware:
            BUDGET_AWARE.add(fmt)
        return fn
    return deco


def register_executor(job_kind: str, model_kind: str):
    def deco(fn: Executor) -> Executor:
        EXECUTORS[job_kind] = fn
        JOB_KIND_TO_MODEL_KIND[job_kind] = model_kind
        return fn
    return deco


def cpu_threads(settings: Settings) -> int:
    return settings.threads or max(1, os.cpu_count() or 1)


def load_measured(model: InstalledModel, device: str, settings: Settings,
                  room: int | None = None) -> tuple[Any, int | None]:
    loader = LOADERS.get(model.fmt)
    if loader is None:
        raise BadRequest(f"Confab cannot load models of format '{model.fmt}' yet.")
    before = process_rss_bytes()
    if model.fmt in BUDGET_AWARE:
        instance = loader(model, device, settings, room=room)
    else:
        instance = loader(model, device, settings)
    measured = getattr(instance, "memory_bytes", None)
    if callable(measured):
        return instance, measured()
    grown = process_rss_bytes() - before
    # mmap'd weights are not all resident right after load; never report less than the file.
    return instance, max(grown, model.size) if device == "cpu" else None


def unload(instance: Any) -> None:
    close = getattr(instance, "close", None)
    if close:
        close()


# -- chat on llama.cpp --------------------------------------------------------------------------

@register_loader("gguf")
def load_gguf(model: InstalledModel, device: str, settings: Settings):
    try:
        from models.llama_chat import LlamaChat
        import llama_cpp  # noqa: F401
    except ImportError:
        raise BackendMissing("llama-cpp-python", "chat") from None
    n_gpu_layers = -1 if device == "cuda" else 0
    return LlamaChat(model.path, n_ctx=settings.context_tokens, n_threads=cpu_threads(settings),
                     n_gpu_layers=n_gpu_layers, n_batch=int(model.options.get("n_batch", 512)))


@register_executor("chat", "chat")
def run_chat(llm, job: ChatJob, ctx: RunContext) -> ChatResult:
    from models.llama_chat import ChatRequest
    max_tokens = job.max_tokens or ctx.settings.max_tokens
    messages = [{"role": m.role, "content": m.content} for m in job.messages]
    last = llm.count_tokens(messages[-1]["content"]) + 8
    system = sum(llm.count_tokens(m["content"]) + 8 for m in messages if m["role"] == "system")
    if last + system + 16 > llm.n_ctx:
        raise PromptTooLong("The prompt", last + system, llm.n_ctx - 16, "tokens")
    req = ChatRequest(messages=messages, max_tokens=max_tokens, temperature=job.temperature,
                      top_p=job.top_p, top_k=job.top_k, stop=list(job.stop),
                      presence_penalty=job.presence_penalty, frequency_penalty=job.frequency_penalty,
                      repeat_penalty=job.repeat_penalty, seed=job.seed)
    out = llm.chat(req, lambda text: ctx.emit(Token(text)), ctx.cancelled)
    return ChatResult(out.text, out.finish_reason, Usage(out.prompt_tokens, out.completion_tokens),
                      job.model, out.trimmed_messages)
