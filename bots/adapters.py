"""Which front doors and modalities plug into `confab`, in one list.

Each module named in EXTENSIONS may define any of:
    register_commands(commands)            add chat commands (speech, images, skills)
    register_cli(subparsers, common)       add CLI verbs (voice, worker, kb)
    SETTINGS                               the door's own settings class (an EnvSettings),
                                           read from the same environment and `.env` as the
                                           engine's by `door_settings`
    async start(engine, commands, app[, settings])
                                           start an adapter when configured (given its SETTINGS
                                           when it has them); return an object with
                                           `async stop()`, or None when not configured
A module whose optional library is missing is skipped with a note in the log.
"""
from __future__ import annotations

import importlib
import logging
from types import ModuleType

from engine import ConfigError
from engine.config import EnvSettings

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


def settings_classes() -> list[type[EnvSettings]]:
    return [module.SETTINGS for module in _modules() if hasattr(module, "SETTINGS")]


def door_settings(env: dict[str, str] | None = None, dotenv: str | None = ".env") -> dict[type, EnvSettings]:
    """Every door's own settings, by class; a bad value is a ConfigError naming its variable."""
    return {cls: cls.from_env(env=env, dotenv=dotenv) for cls in settings_classes()}


async def start_configured(engine, commands, app, doors: dict[type, EnvSettings]) -> list:
    """Start every adapter whose token is set in `doors` (from `door_settings`); returns them
    for `stop_all`."""
    started = []
    for module in _modules():
        if hasattr(module, "start"):
            own = (doors[module.SETTINGS],) if hasattr(module, "SETTINGS") else ()
            adapter = await module.start(engine, commands, app, *own)
            if adapter is not None:
                started.append(adapter)
    return started


async def stop_all(started: list) -> None:
    for adapter in reversed(started):
        try:
            await adapter.stop()
        except Exception:
            log.exception("stopping %s failed", adapter)
