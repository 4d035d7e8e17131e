"""The Discord fake's world: users, guilds with their roles and members, text, DM and thread
channels, permissions, and the bot and its application."""

from __future__ import annotations

import time
from typing import Any, List, Optional

from tests.fakes.discord.protocol import (
    BOT_PERMISSIONS,
    EVERYONE_PERMISSIONS,
    ErrorCode,
    Intents,
    _error,
    _form_error,
    _iso,
    _snowflake_ms,
)


class World:
    """Users, guilds, channels and permissions of DiscordFake."""

    def _make_user(self, username: str, *, user_id: Optional[str] = None, bot: bool = False,
                   global_name: Optional[str] = None) -> dict:
        user = {
            "id": user_id or self._snowflake(),
            "username": username,
            "discriminator": "0",
            "global_name": global_name,
            "avatar": None,
            "avatar_decoration_data": None,
            "banner": None,
            "accent_color": None,
            "public_flags": 0,
            "flags": 0,
            "collectibles": None,
            "primary_guild": None,
        }
        if bot:
            user["bot"] = True
        self.users[user["id"]] = user
        return user

    def add_user(self, username: str, *, global_name: Optional[str] = None, bot: bool = False,
                 guild_id: Optional[str] = None, roles: Optional[List[str]] = None) -> dict:
        """A user; also a member of ``guild_id`` (default: every guild)."""
        user = self._make_user(username, global_name=global_name, bot=bot)
        for gid in ([guild_id] if guild_id else list(self.guilds)):
            self._add_member(gid, user, roles or [])
        return user

    def _add_member(self, guild_id: str, user: dict, roles: List[str]) -> dict:
        member = {
            "user": user,
            "nick": None,
            "avatar": None,
            "banner": None,
            "roles": list(roles),
            "joined_at": _iso(_snowflake_ms(user["id"])),
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "communication_disabled_until": None,
        }
        self.guilds[guild_id]["members"][user["id"]] = member
        return member

    def add_guild(self, name: str, *, owner: dict) -> str:
        gid = self._snowflake()
        everyone = self._role(gid, "@everyone", EVERYONE_PERMISSIONS, position=0)
        admins = self._role(self._snowflake(), "Admins", 8, position=2, hoist=True)
        bot_role = self._role(self._snowflake(), self.bot_user["username"], BOT_PERMISSIONS, position=1,
                              managed=True, tags={"bot_id": self.bot_user_id})
        self.guilds[gid] = {
            "guild": {
                "id": gid,
                "name": name,
                "icon": None,
                "icon_hash": None,
                "splash": None,
                "discovery_splash": None,
                "banner": None,
                "description": None,
                "owner_id": owner["id"],
                "region": "deprecated",
                "afk_channel_id": None,
                "afk_timeout": 300,
                "widget_enabled": False,
                "widget_channel_id": None,
                "verification_level": 0,
                "default_message_notifications": 1,
                "explicit_content_filter": 0,
                "features": [],
                "mfa_level": 0,
                "application_id": None,
                "system_channel_id": None,
                "system_channel_flags": 0,
                "rules_channel_id": None,
                "max_presences": None,
                "max_members": 500000,
                "vanity_url_code": None,
                "premium_tier": 0,
                "premium_subscription_count": 0,
                "preferred_locale": "en-US",
                "public_updates_channel_id": None,
                "max_video_channel_users": 25,
                "max_stage_video_channel_users": 50,
                "nsfw_level": 0,
                "premium_progress_bar_enabled": False,
                "safety_alerts_channel_id": None,
                "latest_onboarding_question_id": None,
                "incidents_data": None,
                "hub_type": None,
                "emojis": [],
                "stickers": [],
            },
            "roles": [everyone, admins, bot_role],
            "admin_role_id": admins["id"],
            "bot_role_id": bot_role["id"],
            "members": {},
        }
        self._add_member(gid, self.bot_user, [bot_role["id"]])
        self._add_member(gid, owner, [admins["id"]])
        for user in self.users.values():
            if user["id"] not in self.guilds[gid]["members"] and not user.get("bot"):
                self._add_member(gid, user, [])
        return gid

    @staticmethod
    def _role(role_id: str, name: str, permissions: int, *, position: int, hoist: bool = False,
              managed: bool = False, tags: Optional[dict] = None) -> dict:
        role = {
            "id": role_id,
            "name": name,
            "description": None,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": hoist,
            "icon": None,
            "unicode_emoji": None,
            "position": position,
            "permissions": str(permissions),
            "managed": managed,
            "mentionable": False,
            "flags": 0,
        }
        if tags is not None:
            role["tags"] = tags
        return role

    def add_text_channel(self, name: str, *, guild_id: Optional[str] = None, topic: Optional[str] = None) -> dict:
        gid = guild_id or self.guild_id
        position = sum(1 for c in self.channels.values() if c.get("guild_id") == gid)
        channel = {
            "id": self._snowflake(),
            "type": 0,
            "guild_id": gid,
            "name": name,
            "position": position,
            "permission_overwrites": [],
            "parent_id": None,
            "topic": topic,
            "nsfw": False,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "flags": 0,
            "icon_emoji": None,
            "theme_color": None,
        }
        self.channels[channel["id"]] = channel
        return channel

    def add_dm_channel(self, user: dict) -> dict:
        for channel in self.channels.values():
            if channel["type"] == 1 and channel["recipients"][0]["id"] == user["id"]:
                return channel
        channel = {
            "id": self._snowflake(),
            "type": 1,
            "last_message_id": None,
            "flags": 0,
            "recipients": [user],
        }
        self.channels[channel["id"]] = channel
        return channel

    def add_role(self, name: str, *, mentionable: bool = False, guild_id: Optional[str] = None) -> str:
        """A role in the guild (no permissions of its own); give it with ``add_user(roles=[...])``.
        A role that is not ``mentionable`` is pinged only by someone with MENTION_EVERYONE."""
        gid = guild_id or self.guild_id
        roles = self.guilds[gid]["roles"]
        role = self._role(self._snowflake(), name, 0, position=len(roles))
        role["mentionable"] = mentionable
        roles.append(role)
        return role["id"]

    def _new_thread(self, parent: dict, message: dict, owner: dict, body: Any) -> dict:
        """Start Thread from Message, as documented
        (https://discord.com/developers/docs/resources/channel#start-thread-from-message): a
        GUILD_TEXT channel gets a PUBLIC_THREAD (11), an announcement channel an
        ANNOUNCEMENT_THREAD (10); the thread's id is the message's, so a message has one thread."""
        if parent["type"] not in (0, 5):
            raise _error(400, ErrorCode.INVALID_CHANNEL_TYPE, "Cannot execute action on this channel type")
        if message["id"] in self.channels:
            raise _error(400, ErrorCode.THREAD_ALREADY_CREATED, "A thread has already been created for this message")
        if not isinstance(body, dict):
            raise _form_error([], "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
        name = body.get("name")
        if not isinstance(name, str) or not 1 <= len(name) <= 100:
            raise _form_error(["name"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        archive = body.get("auto_archive_duration")
        if archive is None:
            archive = parent.get("default_auto_archive_duration", 1440)
        if archive not in (60, 1440, 4320, 10080):
            raise _form_error(["auto_archive_duration"], "BASE_TYPE_CHOICES",
                              "Value must be one of {60, 1440, 4320, 10080}.")
        slowmode = body.get("rate_limit_per_user")
        if slowmode is not None and (isinstance(slowmode, bool) or not isinstance(slowmode, int)
                                     or not 0 <= slowmode <= 21600):
            raise _form_error(["rate_limit_per_user"], "NUMBER_TYPE_MAX", "int value should be between 0 and 21600.")
        now = _iso(int(time.time() * 1000))
        thread = {
            "id": message["id"],
            "type": 11 if parent["type"] == 0 else 10,
            "guild_id": parent["guild_id"],
            "parent_id": parent["id"],
            "owner_id": owner["id"],
            "name": name,
            "last_message_id": None,
            "message_count": 0,
            "member_count": 1,
            "rate_limit_per_user": slowmode or 0,
            "flags": 0,
            "total_message_sent": 0,
            "thread_metadata": {"archived": False, "auto_archive_duration": archive, "archive_timestamp": now,
                                "locked": False, "create_timestamp": now},
        }
        self.channels[thread["id"]] = thread
        message["thread"] = dict(thread)    # the message object's `thread` field
        return thread

    async def start_thread(self, message: dict, *, by: Optional[dict] = None, name: str = "thread") -> dict:
        """A person (``by``, default the first user) starts a thread from ``message``, as in
        Discord's client; the client gets THREAD_CREATE. Returns the thread channel."""
        stored = self.messages.get(str(message["id"]))
        if stored is None:
            raise ValueError("message is not a message the fake knows")
        thread = self._new_thread(self.channels[stored["channel_id"]], stored, by or self.user, {"name": name})
        await self._thread_created(thread)
        return thread

    async def _thread_created(self, thread: dict) -> None:
        # https://discord.com/developers/docs/events/gateway-events#thread-create: a new thread
        # comes with newly_created = true.
        if self._session is not None:
            await self.dispatch("THREAD_CREATE", dict(thread, newly_created=True))

    def is_thread(self, channel_id: str) -> bool:
        return self.channels.get(str(channel_id), {}).get("type") in (10, 11, 12)

    def member(self, user: dict, guild_id: Optional[str] = None) -> dict:
        return self.guilds[guild_id or self.guild_id]["members"][user["id"]]

    def _channel_or_404(self, channel_id: str) -> dict:
        channel = self.channels.get(str(channel_id))
        if channel is None:
            raise _error(404, ErrorCode.UNKNOWN_CHANNEL, "Unknown Channel")
        return channel

    def _member_permissions(self, guild_id: str, user_id: str) -> int:
        g = self.guilds[guild_id]
        if g["guild"]["owner_id"] == user_id:
            return (1 << 51) - 1
        perms = 0
        roles = {r["id"]: r for r in g["roles"]}
        for rid in [guild_id] + g["members"][user_id]["roles"]:
            perms |= int(roles[rid]["permissions"])
        return (1 << 51) - 1 if perms & 8 else perms

    def _me(self) -> dict:
        me = dict(self.bot_user)
        me.update({"mfa_enabled": False, "locale": "en-US", "verified": True, "email": None, "premium_type": 0,
                   "bio": "", "bot": True})
        return me

    def _application_flags(self) -> int:
        flags = 1 << 23  # APPLICATION_COMMAND_BADGE
        if self.allowed_privileged_intents & Intents.GUILD_PRESENCES:
            flags |= 1 << 13  # GATEWAY_PRESENCE_LIMITED
        if self.allowed_privileged_intents & Intents.GUILD_MEMBERS:
            flags |= 1 << 15  # GATEWAY_GUILD_MEMBERS_LIMITED
        if self.allowed_privileged_intents & Intents.MESSAGE_CONTENT:
            flags |= 1 << 19  # GATEWAY_MESSAGE_CONTENT_LIMITED
        return flags
