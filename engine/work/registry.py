"""What runs a job: each model format's loader and each job kind's executor, registered by the
modules in `MODALITIES` (chat, speech, images, embeddings, reranking), and the measured load the memory
manager calls.

Loaders and executors are blocking and run on the engine's model thread (the memory manager calls
the loaders, the engine the executors); chat's executors are coroutines that only wait on a runner
process, so they run on the event loop (`ON_LOOP`).
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any, Callable

from engine.config import Settings
from engine.errors import BadRequest
from engine.jobs import Job
from models.devices import process_rss_bytes
from models.registry import InstalledModel


@dataclass
class RunContext:
    """What an executor may do besides computing: stream events and check for cancel."""
    emit: Callable[[object], None]
    cancelled: Callable[[], bool]
    device: str
    settings: Settings
    adapter: InstalledModel | None = None   # the LoRA the job names, applied on its base


Loader = Callable[[InstalledModel, str, Settings], Any]
Executor = Callable[[Any, Job, RunContext], Any]

LOADERS: dict[str, Loader] = {}
# Formats whose loader also takes `room`: the bytes the memory manager's budget leaves on the
# device, from which it chooses memory-saving settings (diffusers).
BUDGET_AWARE: set[str] = set()
# The runtime each format's models run in, for the memory plan's runtime costs (engine/runtime/memory.py).
LIBRARIES: dict[str, str] = {}
EXECUTORS: dict[str, Executor] = {}
JOB_KIND_TO_MODEL_KIND: dict[str, str] = {"chat": "chat", "completion": "chat"}
ON_LOOP: set[str] = set()

# Modules that register loaders and executors for more kinds of work (imported by the engine).
MODALITIES: list[str] = [
    "engine.work.chat",
    "engine.work.images",
    "engine.work.speech",
    "engine.work.embeddings",
    "engine.work.rerank",
]


def load_modalities() -> None:
    for name in MODALITIES:
        importlib.import_module(name)


def register_loader(fmt: str, budget_aware: bool = False, library: str = ""):
    def deco(fn: Loader) -> Loader:
        LOADERS[fmt] = fn
        LIBRARIES[fmt] = library
        if budget_aware:
            BUDGET_AWARE.add(fmt)
        return fn
    return deco


def register_executor(job_kind: str, model_kind: str, on_loop: bool = False):
    """`on_loop`: the executor is a coroutine that only waits on a runner process (chat), so it
    runs on the event loop; the others block in native code, on their model's own thread."""
    def deco(fn: Executor) -> Executor:
        EXECUTORS[job_kind] = fn
        JOB_KIND_TO_MODEL_KIND[job_kind] = model_kind
        if on_loop:
            ON_LOOP.add(job_kind)
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
    if LIBRARIES.get(model.fmt):   # the first load's growth is mostly its library, counted apart
        return instance, None
    # mmap'd weights are not all resident right after load; never report less than the file.
    return instance, max(grown, model.size) if device == "cpu" else None


def unload(instance: Any) -> None:
    close = getattr(instance, "close", None)
    if close:
        close()


