"""How an adapter shows a reply: the one interface every platform implements (`Reply`), and
what some replies can do besides, which the shared commands look for by these protocols."""
from __future__ import annotations

from typing import AsyncIterator, Protocol, runtime_checkable


class Reply(Protocol):
    """One place to answer: a console, a Slack thread, a Discord channel or interaction."""

    async def say(self, text: str) -> object:
        """Post a message; returns the platform's reference to it."""

    async def stream(self, chunks: AsyncIterator[str], status: str = "") -> str:
        """Show text as it is generated (throttled edits on chat platforms); returns it all."""

    async def update(self, ref: object, text: str) -> None:
        """Replace the text of a message posted earlier."""

    async def send_file(self, data: bytes, filename: str, title: str = "", voice: bool = False,
                        duration_s: float = 0.0, waveform: bytes = b"") -> object:
        """Attach a file (an image, or audio; `voice` asks for a native voice message, which
        shows `duration_s` and `waveform` as the engine measured them)."""

    async def private(self, text: str) -> object:
        """Say something only the asker sees (ephemeral where the platform has it)."""


@runtime_checkable
class ImageControls(Protocol):
    """A reply with controls on an /imagine status message: Cancel while the job is queued or
    drawing (done=False), Re-roll once it finished (done=True)."""

    async def image_controls(self, ref: object, job_id: str, spec, done: bool) -> None: ...


@runtime_checkable
class FillsForm(Protocol):
    """A reply that asks for a template's missing slots in one form (Discord's modal); the
    values given, or None when the person cancelled."""

    async def form(self, template, values: dict) -> dict | None: ...


@runtime_checkable
class AsksLine(Protocol):
    """A reply that can ask for one line at a prompt (the console); None at end of input."""

    async def ask(self, prompt: str) -> str | None: ...
