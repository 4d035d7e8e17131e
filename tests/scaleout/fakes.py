"""A fake chat backend with set times, for tests where the point is scheduling, not words.

`SleepJob` is a job kind of its own (so nothing else in the process changes): its executor emits
its words as tokens over `seconds`, stopping at a cancel, and answers with the whole text.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from engine import wire
from engine.jobs import ChatResult, Job, Token, Usage, register_job_type
from engine.work.registry import RunContext, register_executor
from models.registry import InstalledModel

wire.trust("tests.scaleout.")

FAKE_MODELS = ("fake-a", "fake-b", "fake-c")


@register_job_type
@dataclass
class SleepJob(Job):
    kind = "sleep"
    seconds: float = 0.1
    text: str = "one two three"


class FakeModel:
    def __init__(self, name: str):
        self.name = name


def fake_load(name: str, device: str):
    return FakeModel(name), 1000


@register_executor("sleep", "chat")
def run_sleep(model: FakeModel, job: SleepJob, ctx: RunContext) -> ChatResult:
    words = job.text.split(" ")
    step = job.seconds / max(1, len(words))
    for i, word in enumerate(words):
        if ctx.cancelled():
            break
        time.sleep(step)
        ctx.emit(Token(word if i == 0 else " " + word))
    return ChatResult(job.text, "stop", Usage(0, len(words)), job.model)


def install_fake_models(engine) -> None:
    """Make the fake models known to an engine (the front resolves names before queueing)."""
    for name in FAKE_MODELS:
        engine._installed[name] = InstalledModel(name, "chat", "fake", "/nonexistent", 1000)
