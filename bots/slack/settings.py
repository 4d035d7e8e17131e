"""Slack's settings: read like the engine's (engine/config.py), from the same environment and
`.env`; the adapter starts when SLACK_BOT_TOKEN is set."""
from __future__ import annotations

from dataclasses import dataclass, field

from engine.config import EnvSettings


@dataclass(frozen=True)
class SlackSettings(EnvSettings):
    slack_bot_token: str = field(default="", metadata={"env": "SLACK_BOT_TOKEN", "secret": True}, repr=False)
    slack_app_token: str = field(default="", metadata={"env": "SLACK_APP_TOKEN", "secret": True}, repr=False)
    slack_signing_secret: str = field(default="", metadata={"env": "SLACK_SIGNING_SECRET", "secret": True}, repr=False)
    slack_api_url: str = field(default="", metadata={"env": "CONFAB_SLACK_API_URL"})
    slack_allow_channels: tuple[str, ...] = field(default=(), metadata={"env": "CONFAB_SLACK_ALLOW_CHANNELS"})
    slack_deny_channels: tuple[str, ...] = field(default=(), metadata={"env": "CONFAB_SLACK_DENY_CHANNELS"})
    slack_allow_users: tuple[str, ...] = field(default=(), metadata={"env": "CONFAB_SLACK_ALLOW_USERS"})
    slack_deny_users: tuple[str, ...] = field(default=(), metadata={"env": "CONFAB_SLACK_DENY_USERS"})
    slack_answer_bots: tuple[str, ...] = field(default=(), metadata={"env": "CONFAB_SLACK_ANSWER_BOTS"})
    slack_user_rate: int = field(default=20, metadata={"env": "CONFAB_SLACK_USER_RATE"})
    slack_edit_interval_s: float = field(default=1.0, metadata={"env": "CONFAB_SLACK_EDIT_INTERVAL"})

    def validate(self) -> None:
        self.require_positive("slack_edit_interval_s")
        self.require_limit("slack_user_rate")
