"""Which front doors start with `confab run`, and the commands and CLI verbs they add.

Each platform adapter registers here, so `cli.py` stays the same as platforms are added.
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def extend_commands(commands) -> None:
    """Let installed modalities add their chat commands (speech, images, skills)."""


def extend_cli(sub, common) -> None:
    """Let modalities add CLI verbs (voice, worker, kb)."""


async def start_configured(engine, commands, app) -> list:
    """Start every adapter whose token is set; returns handles for `stop_all`."""
    started = []
    return started


async def stop_all(started: list) -> None:
    for adapter in reversed(started):
        try:
            await adapter.stop()
        except Exception:
            log.exception("stopping %s failed", adapter)
