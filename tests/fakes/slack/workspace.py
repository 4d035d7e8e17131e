"""The Slack fake's workspace: users, user groups, channels and DMs, and the store of messages
with thread fields kept as Slack shows them."""

from __future__ import annotations

import copy
import time
from typing import Any, Callable, Iterable, Optional

from tests.fakes.slack.protocol import _rand_id, load_fixture


class Workspace:
    """Users, channels and the message store of SlackFake."""

    def _seed(self) -> None:
        self.add_user(self.bot_user_id, self.bot_name, real_name=self.bot_name.title(), is_bot=True)
        self.add_user("U1", "alice", real_name="Alice Example", is_admin=True)
        self.add_user("U2", "bob", real_name="Bob Example")
        self.add_channel("C1", "general", members=["U1", "U2", self.bot_user_id])
        self.add_channel("C2", "random", members=["U1", "U2"])  # the bot is not a member
        self.add_channel("D1", None, is_im=True, user="U1")

    def add_user(self, user_id: str, name: str, *, real_name: Optional[str] = None, is_bot: bool = False,
                 is_admin: bool = False, tz: str = "Europe/Berlin", deleted: bool = False, **extra: Any) -> dict:
        user = load_fixture("user")
        real_name = real_name or name
        user.update({
            "id": user_id, "team_id": self.team_id, "name": name, "real_name": real_name,
            "deleted": deleted, "is_bot": is_bot, "is_admin": is_admin, "tz": tz,
            "tz_label": "Central European Time", "tz_offset": 3600, "is_app_user": False,
        })
        user["profile"] = dict(user["profile"], real_name=real_name, real_name_normalized=real_name,
                               display_name=name, display_name_normalized=name, team=self.team_id)
        if is_bot:
            user["profile"]["bot_id"] = self.bot_id if user_id == self.bot_user_id else _rand_id("B")
            user["profile"]["api_app_id"] = self.app_id
        user.update(extra)
        self.users[user_id] = user
        return user

    def add_channel(self, channel_id: str, name: Optional[str], *, is_im: bool = False, is_private: bool = False,
                    user: Optional[str] = None, members: Optional[Iterable[str]] = None,
                    is_archived: bool = False) -> dict:
        if is_im:
            if user is None:
                raise ValueError("an IM needs the user it is with")
            members = [user, self.bot_user_id]
        ch = {
            "id": channel_id,
            "name": name,
            "is_channel": not is_im and not is_private,
            "is_group": is_private,
            "is_im": is_im,
            "is_mpim": False,
            "is_private": is_private or is_im,
            "is_archived": is_archived,
            "user": user,
            "members": set(members or []),
            "created": int(time.time()) - 86400,
        }
        self.channels[channel_id] = ch
        self._messages.setdefault(channel_id, [])
        return ch

    def channel_type(self, channel_id: str) -> str:
        ch = self.channels.get(channel_id)
        if ch is None:
            return {"D": "im", "G": "group"}.get(channel_id[:1], "channel")
        if ch["is_im"]:
            return "im"
        if ch["is_mpim"]:
            return "mpim"
        return "group" if ch["is_private"] else "channel"

    def im_with(self, user_id: str) -> str:
        """The id of the bot's DM channel with a user (created on first use, as Slack does)."""
        for ch in self.channels.values():
            if ch["is_im"] and ch["user"] == user_id:
                return ch["id"]
        cid = _rand_id("D")
        self.add_channel(cid, None, is_im=True, user=user_id)
        return cid

    def messages(self, channel: str, thread_ts: Optional[str] = None, *, top_level_only: bool = False) -> list[dict]:
        """Messages in a channel, oldest first: posted (and updated) by the bot, and the users'
        messages the fake's event builders produced. With thread_ts: that thread, parent first."""
        msgs = [m for m in self._messages.get(channel, []) if not m.get("_orphan")]
        if thread_ts is not None:
            msgs = [m for m in msgs if m["ts"] == thread_ts or m.get("thread_ts") == thread_ts]
        elif top_level_only:
            msgs = [m for m in msgs if self._is_top_level(m)]
        return [self._public(m) for m in sorted(msgs, key=lambda m: float(m["ts"]))]

    def bot_messages(self, channel: str, thread_ts: Optional[str] = None) -> list[dict]:
        return [m for m in self.messages(channel, thread_ts) if m.get("bot_id") == self.bot_id]

    def count_bot_messages(self, channel: str, predicate: Callable[[dict], bool]) -> int:
        """How many of the bot's messages in a channel match, without copying them (for
        benchmarks that poll after every call)."""
        return sum(1 for m in self._messages.get(channel, [])
                   if not m.get("_orphan") and m.get("bot_id") == self.bot_id and predicate(m))

    async def wait_message(self, channel: str, predicate: Optional[Callable[[dict], bool]] = None, *,
                           thread_ts: Optional[str] = None, timeout: float = 10) -> dict:
        """Waits until a message in the channel (thread) matches predicate; returns the newest match."""

        def find() -> Optional[dict]:
            for m in reversed(self.messages(channel, thread_ts)):
                if predicate is None or predicate(m):
                    return m
            return None

        return await self.wait_until(find, timeout, f"a message in {channel}")

    @staticmethod
    def _is_top_level(m: dict) -> bool:
        return m.get("thread_ts") in (None, m["ts"]) or m.get("subtype") == "thread_broadcast"

    @staticmethod
    def _public(m: dict) -> dict:
        return {k: copy.deepcopy(v) for k, v in m.items() if not k.startswith("_")}

    def _find_message(self, channel: str, ts: str) -> Optional[dict]:
        for m in self._messages.get(channel, []):
            if m["ts"] == ts and not m.get("_orphan"):
                return m
        return None

    def _store_message(self, channel: str, msg: dict) -> dict:
        """Stores a message and keeps the parent's thread fields as Slack shows them."""
        msgs = self._messages.setdefault(channel, [])
        existing = self._find_message(channel, msg["ts"])
        if existing is not None:
            return existing
        stored = copy.deepcopy(msg)
        stored.pop("channel_type", None)
        stored.pop("event_ts", None)
        stored["_channel"] = channel
        msgs.append(stored)
        tts = stored.get("thread_ts")
        if tts and tts != stored["ts"]:
            parent = self._find_message(channel, tts)
            if parent is not None:
                parent["thread_ts"] = tts
                parent["reply_count"] = parent.get("reply_count", 0) + 1
                users = parent.setdefault("reply_users", [])
                author = stored.get("user") or stored.get("bot_id")
                if author and author not in users:
                    users.append(author)
                parent["reply_users_count"] = len(users)
                parent["latest_reply"] = stored["ts"]
        self._notify()
        return stored

    def add_usergroup(self, group_id: str, members: list[str]) -> None:
        self.usergroups[group_id] = list(members)
