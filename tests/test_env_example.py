"""Every setting Confab reads is documented in .env.example, and bad values are refused."""
import dataclasses
import re
from pathlib import Path

import pytest

from bots.adapters import settings_classes
from engine.config import ConfigError, Settings

ROOT = Path(__file__).resolve().parent.parent


def every_settings_class() -> list[type]:
    """The engine's and each door's own."""
    return [Settings, *settings_classes()]


def all_settings(env: dict[str, str]) -> list:
    return [cls.from_env(env=env, dotenv=None) for cls in every_settings_class()]


def documented() -> set[str]:
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^([A-Z][A-Z0-9_]+)=", text, flags=re.M))


def test_every_setting_is_in_env_example():
    names = {f.metadata["env"] for cls in every_settings_class() for f in dataclasses.fields(cls)
             if "env" in f.metadata}
    missing = names - documented()
    assert not missing, f"add these to .env.example: {sorted(missing)}"


def test_every_documented_variable_has_a_comment():
    lines = (ROOT / ".env.example").read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^[A-Z][A-Z0-9_]+=", line):
            above = [l for l in lines[max(0, i - 6):i] if l.strip()]
            assert above and any(l.startswith("#") for l in above), f"{line} has no comment above it"


def test_explicit_arguments_win_over_the_environment():
    s = Settings.from_env(env={"CONFAB_PORT": "9000", "CONFAB_API_KEYS": "a, b"}, dotenv=None, port=9100)
    assert s.port == 9100
    assert s.api_keys == ("a", "b")


@pytest.mark.parametrize("env, word", [({"CONFAB_PORT": "eighty"}, "CONFAB_PORT"),
                                       ({"CONFAB_QUEUE_MAX": "0"}, "CONFAB_QUEUE_MAX"),
                                       ({"CONFAB_DEVICE": "tpu"}, "CONFAB_DEVICE")])
def test_bad_values_are_reported_by_name(env, word):
    with pytest.raises(ConfigError, match=word):
        Settings.from_env(env=env, dotenv=None)


def test_secrets_are_redacted():
    shown = str([s.redacted() for s in all_settings({"SLACK_BOT_TOKEN": "xoxb-secret", "CONFAB_API_KEYS": "k1"})])
    assert "xoxb-secret" not in shown and "k1" not in shown


def test_secrets_never_appear_in_repr():
    s = all_settings({"DISCORD_BOT_TOKEN": "discord-secret", "CONFAB_API_KEYS": "key-secret"})
    assert "discord-secret" not in repr(s) and "key-secret" not in repr(s)


@pytest.mark.parametrize("env, word", [({"CONFAB_SLACK_USER_RATE": "-1"}, "CONFAB_SLACK_USER_RATE"),
                                       ({"CONFAB_SLACK_EDIT_INTERVAL": "0"}, "CONFAB_SLACK_EDIT_INTERVAL"),
                                       ({"CONFAB_DISCORD_ALLOW_DMS": "maybe"}, "CONFAB_DISCORD_ALLOW_DMS"),
                                       ({"CONFAB_DISCORD_USER_RATE": "-1"}, "CONFAB_DISCORD_USER_RATE")])
def test_bad_door_values_are_reported_by_name(env, word):
    with pytest.raises(ConfigError, match=word):
        all_settings(env)


def test_every_door_reads_the_same_environment_and_dotenv(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("SLACK_BOT_TOKEN=xoxb-from-dotenv\nCONFAB_DISCORD_USER_RATE=7\nCONFAB_PORT=9001\n")
    values = {type(s).__name__: s for s in (cls.from_env(env={"CONFAB_DISCORD_USER_RATE": "3"}, dotenv=dotenv)
                                            for cls in every_settings_class())}
    assert values["Settings"].port == 9001
    assert values["SlackSettings"].slack_bot_token == "xoxb-from-dotenv"
    assert values["DiscordSettings"].discord_user_rate == 3
