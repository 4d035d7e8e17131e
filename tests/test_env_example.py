"""Every setting Confab reads is documented in .env.example, and bad values are refused."""
import dataclasses
import re
from pathlib import Path

import pytest

from engine.config import ConfigError, Settings

ROOT = Path(__file__).resolve().parent.parent


def documented() -> set[str]:
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^([A-Z][A-Z0-9_]+)=", text, flags=re.M))


def test_every_setting_is_in_env_example():
    names = {f.metadata["env"] for f in dataclasses.fields(Settings) if "env" in f.metadata}
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
    s = Settings.from_env(env={"SLACK_BOT_TOKEN": "xoxb-secret", "CONFAB_API_KEYS": "k1"}, dotenv=None)
    shown = str(s.redacted())
    assert "xoxb-secret" not in shown and "k1" not in shown


def test_secrets_never_appear_in_repr():
    s = Settings.from_env(env={"DISCORD_BOT_TOKEN": "discord-secret", "CONFAB_API_KEYS": "key-secret"},
                          dotenv=None)
    assert "discord-secret" not in repr(s) and "key-secret" not in repr(s)
