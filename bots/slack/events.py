"""Slack payloads to Confab's terms: which events are questions, where the answer goes, which
conversation they belong to, and the typed record each kind of event is kept as until it is
answered. Pure functions and one bounded set; no I/O.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import ClassVar

from bots.common.intake import Kept

# Message subtypes that are a person (or an allowed bot) saying something.
# Slack marks a clip by its file's subtype (slack_audio) under a file_share message; a message
# that carries the subtype itself (older clients, some proxies) is a clip all the same.
SPOKEN_SUBTYPES = {None, "file_share", "thread_broadcast", "bot_message", "me_message", "slack_audio"}


@dataclass(frozen=True)
class Said:
    """One message that Confab should answer."""
    team: str
    channel: str
    user: str
    ts: str
    thread_ts: str | None      # where the answer goes; None: the top of a DM
    is_dm: bool
    text: str                  # the mention stripped
    files: tuple[dict, ...] = field(default=())

    @property
    def conversation(self) -> str:
        """The store's key for this thread's memory (a DM's top level is one conversation)."""
        return f"slack:{self.team}:{self.channel}:{self.thread_ts or 'dm'}"


def strip_mention(text: str, bot_user_id: str) -> str:
    text = re.sub(rf"<@{re.escape(bot_user_id)}(\|[^>]*)?>", " ", text or "")
    return re.sub(r"[ \t]+", " ", text).strip()


def is_dm(event: dict) -> bool:
    return event.get("channel_type") == "im" or str(event.get("channel", "")).startswith("D")


def is_from_bot(event: dict) -> bool:
    return bool(event.get("bot_id")) or event.get("subtype") == "bot_message"


def said(event: dict, team: str, bot_user_id: str, bot_id: str,
         answer_bots: tuple[str, ...] = ()) -> Said | None:
    """The question in an app_mention or message event, or None when Confab should stay quiet.

    Questions are mentions, DMs, and audio clips (a clip shared where Confab is); a message
    event that mentions Confab in a channel is the twin of an app_mention and answered once,
    by whichever of the two the caller sees first (see `Seen`).
    """
    etype = event.get("type")
    subtype = event.get("subtype")
    if etype not in ("app_mention", "message") or subtype not in SPOKEN_SUBTYPES:
        return None
    user = event.get("user") or ""
    if user == bot_user_id or (bot_id and event.get("bot_id") == bot_id):
        return None
    if is_from_bot(event) and "*" not in answer_bots and event.get("bot_id") not in answer_bots:
        return None
    files = tuple(event.get("files") or ())
    dm = is_dm(event)
    has_clip = any(f.get("subtype") == "slack_audio" or str(f.get("mimetype", "")).startswith("audio/")
                   for f in files)
    mentioned = etype == "app_mention" or f"<@{bot_user_id}" in (event.get("text") or "")
    if not (dm or mentioned or has_clip):
        return None
    ts = event.get("ts") or event.get("event_ts") or ""
    thread_ts = event.get("thread_ts") or (None if dm else ts)
    return Said(team=event.get("team") or team, channel=event.get("channel", ""),
                user=user or event.get("bot_id", ""), ts=ts, thread_ts=thread_ts, is_dm=dm,
                text=strip_mention(event.get("text", ""), bot_user_id), files=files)


class Seen:
    """Keys already handled (channel and ts of a message), the newest `size` of them: a
    mention's twin message event, and Slack's redeliveries, are answered once."""

    def __init__(self, size: int = 10_000):
        self.size = size
        self._keys: OrderedDict[str, None] = OrderedDict()

    def first(self, key: str) -> bool:
        """True the first time `key` is offered, False after."""
        if key in self._keys:
            self._keys.move_to_end(key)
            return False
        self._keys[key] = None
        while len(self._keys) > self.size:
            self._keys.popitem(last=False)
        return True


def command_name(command: str) -> str:
    """'/ask' -> 'ask'; a workspace's renamed '/confab-ask' too."""
    name = command.lstrip("/").lower()
    return name[len("confab-"):] if name.startswith("confab-") else name


# -- kept events: what a restart needs to answer them ---------------------------------------

@dataclass(frozen=True)
class KeptMessage(Kept):
    """A question in a message or mention."""
    kind: ClassVar[str] = "message"
    event: dict
    team: str = ""


@dataclass(frozen=True)
class KeptSupport(Kept):
    """A support channel's question, open until the desk has done with it."""
    kind: ClassVar[str] = "support"
    event: dict


@dataclass(frozen=True)
class KeptCommand(Kept):
    """A slash command (its response_url answers it after a restart)."""
    kind: ClassVar[str] = "command"
    command: dict


@dataclass(frozen=True)
class KeptReroll(Kept):
    """A Re-roll click."""
    kind: ClassVar[str] = "reroll"
    body: dict


KEPT = (KeptMessage, KeptSupport, KeptCommand, KeptReroll)
