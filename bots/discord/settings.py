"""Discord's settings: read like the engine's (engine/config.py), from the same environment and
`.env`; the adapter starts when DISCORD_BOT_TOKEN is set."""
from __future__ import annotations

from dataclasses import dataclass, field

from engine.config import EnvSettings


@dataclass(frozen=True)
class DiscordSettings(EnvSettings):
    discord_bot_token: str = field(default="", metadata={"env": "DISCORD_BOT_TOKEN", "secret": True}, repr=False)
    discord_api_url: str = field(default="", metadata={"env": "CONFAB_DISCORD_API_URL"})
    discord_gateway_url: str = field(default="", metadata={"env": "CONFAB_DISCORD_GATEWAY_URL"})
    discord_guild_ids: tuple[str, ...] = field(default=(), metadata={"env": "CONFAB_DISCORD_GUILD_IDS"})
    discord_admin_roles: tuple[str, ...] = field(default=(), metadata={"env": "CONFAB_DISCORD_ADMIN_ROLES"})
    discord_allow_guilds: tuple[str, ...] = field(default=(), metadata={"env": "CONFAB_DISCORD_ALLOW_GUILDS"})
    discord_allow_channels: tuple[str, ...] = field(default=(), metadata={"env": "CONFAB_DISCORD_ALLOW_CHANNELS"})
    discord_allow_roles: tuple[str, ...] = field(default=(), metadata={"env": "CONFAB_DISCORD_ALLOW_ROLES"})
    discord_allow_dms: bool = field(default=True, metadata={"env": "CONFAB_DISCORD_ALLOW_DMS"})
    discord_listen_channels: tuple[str, ...] = field(default=(), metadata={"env": "CONFAB_DISCORD_LISTEN_CHANNELS"})
    discord_answer_bots: tuple[str, ...] = field(default=(), metadata={"env": "CONFAB_DISCORD_ANSWER_BOTS"})
    discord_user_rate: int = field(default=20, metadata={"env": "CONFAB_DISCORD_USER_RATE"})
    discord_edit_interval_s: float = field(default=1.0, metadata={"env": "CONFAB_DISCORD_EDIT_INTERVAL"})

    def validate(self) -> None:
        self.require_positive("discord_edit_interval_s")
        self.require_limit("discord_user_rate")
