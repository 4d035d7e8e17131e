"""Who may ask Confab on Discord, where, and how urgently.

Platform-neutral parts (the per-person rate limit) come from `bots.common.access`; this module
adds Discord's own notions: guilds, channels and threads, roles, and admins named by user id
(`CONFAB_ADMINS=discord:123`) or by role (`CONFAB_DISCORD_ADMIN_ROLES`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable

from bots.common import words
from bots.common.access import RateLimit
from bots.discord.settings import DiscordSettings
from engine import Origin

# Who and where Discord's own rules refuse (servers and roles)
NO_DMS = "🚫 I don't answer direct messages here. Ask me in a server channel."
ROLES_UNSEEN_IN_DM = ("🚫 I can only answer people with an allowed role, which I can't see in a "
                      "direct message. Ask me in the server.")
NOT_THIS_SERVER = "🚫 I'm not set up to answer in this server."
NOT_ALLOWED_ROLE = "🚫 Sorry, I only answer people with one of the allowed roles."


@dataclass(frozen=True)
class Who:
    """The facts about one event that access and priority depend on."""
    user_id: str
    channel_id: str
    guild_id: str | None = None        # None: a direct message
    parent_id: str | None = None       # a thread's parent channel
    role_ids: frozenset[str] = frozenset()
    is_bot: bool = False

    @property
    def is_dm(self) -> bool:
        return self.guild_id is None

    def to_record(self) -> dict:
        """As the store keeps it with an event answered after a restart."""
        return {"user_id": self.user_id, "channel_id": self.channel_id, "guild_id": self.guild_id,
                "parent_id": self.parent_id, "role_ids": sorted(self.role_ids), "is_bot": self.is_bot}

    @classmethod
    def from_record(cls, record: dict) -> "Who":
        return cls(**{**record, "role_ids": frozenset(record.get("role_ids") or ())})


class DiscordAccess:
    def __init__(self, settings: DiscordSettings, admins: Iterable[str] = (),
                 clock: Callable[[], float] = time.monotonic):
        """`admins`: CONFAB_ADMINS, the engine's setting."""
        self.settings = settings
        self.admins = frozenset(admins)
        self.admin_roles = frozenset(settings.discord_admin_roles)
        self.allow_guilds = frozenset(settings.discord_allow_guilds)
        self.allow_channels = frozenset(settings.discord_allow_channels)
        self.allow_roles = frozenset(settings.discord_allow_roles)
        self.answer_bots = frozenset(settings.discord_answer_bots)
        self.rate = RateLimit(settings.discord_user_rate, clock)

    def is_admin(self, who: Who) -> bool:
        return f"discord:{who.user_id}" in self.admins or bool(who.role_ids & self.admin_roles)

    def answers_bot(self, user_id: str) -> bool:
        return user_id in self.answer_bots

    def origin(self, who: Who, thread: str = "") -> Origin:
        """Direct messages and admins are priority class 0 (see engine.priority)."""
        return Origin(platform="discord", user=who.user_id, channel=who.channel_id, thread=thread,
                      is_dm=who.is_dm, is_admin=self.is_admin(who))

    def check(self, who: Who) -> str | None:
        """None when `who` may ask here now; else the words to answer with."""
        admin = self.is_admin(who)
        if who.is_dm:
            if not self.settings.discord_allow_dms and not admin:
                return NO_DMS
            if self.allow_roles and not admin:
                return ROLES_UNSEEN_IN_DM
        else:
            if self.allow_guilds and who.guild_id not in self.allow_guilds:
                return NOT_THIS_SERVER
            if self.allow_channels and not ({who.channel_id, who.parent_id} & self.allow_channels):
                return words.NOT_THIS_CHANNEL
            if self.allow_roles and not admin and not (who.role_ids & self.allow_roles):
                return NOT_ALLOWED_ROLE
        if admin:
            return None
        wait = self.rate.hit(who.user_id)
        if wait:
            return words.too_many_requests(self.rate.per_minute, wait)
        return None
