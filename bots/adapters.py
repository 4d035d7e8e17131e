"""Which front doors and modalities plug into `confab`, in one list.

Each module named in EXTENSIONS may define any of:
    register_commands(commands)            add chat commands (speech, images, skills)
    register_cli(subparsers, common)       add CLI verbs (voice, worker, kb)
    async start(engine, commands, app)     start an adapter when configured; return an object
                                           with `async stop()`, or None when not configured
A module whose optional library is missing is skipped with a note in the log.
"""
from __future__ import annotations

import importlib
import logging
from types import ModuleType

from engine import ConfigError

log = logging.getLogger(__name__)

EXTENSIONS: list[str] = [
    "bots.discord",
    "bots.common.speech",
    "voice.cli",
    "bots.slack",
    "bots.common.image_commands",
    "bots.kb_cli",
    "bots.skills",
]


def door_modules(token_name: str, library: str, extra: str, *names: str) -> list[ModuleType]:
    """A configured door's modules, which bring its optional library: imported when its token is
    set, or a ConfigError that says what to install."""
    try:
        return [importlib.import_module(name) for name in names]
    except ImportError as e:
        raise ConfigError(f"{token_name} is set but {library} is missing ({e.name}). Install it "
                          f"with: pip install 'confab-bot[{extra}]'") from None


def _modules():
    for name in EXTENSIONS:
        try:
            yield importlib.import_module(name)
        except ImportError as e:
            log.info("%s is not available: %s", name, e)


def extend_commands(commands) -> None:
    for module in _modules():
        if hasattr(module, "register_commands"):
            module.register_commands(commands)


def extend_cli(sub, common) -> None:
    for module in _modules():
        if hasattr(module, "register_cli"):
            module.register_cli(sub, common)


async def start_configured(engine, commands, app) -> list:
    """Start every adapter whose token is set; returns them for `stop_all`."""
    started = []
    for module in _modules():
        if hasattr(module, "start"):
            adapter = await module.start(engine, commands, app)
            if adapter is not None:
                started.append(adapter)
    return started


async def stop_all(started: list) -> None:
    for adapter in reversed(started):
        try:
            await adapter.stop()
        except Exception:
            log.exception("stopping %s failed", adapter)
