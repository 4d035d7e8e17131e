"""Discord's events in Confab's terms: who asks from where, which messages are addressed to
Confab, which conversation a message belongs to, and the typed record each kind of event (a
message, a support question, an interaction) is kept as until it is answered. Pure functions
of discord.py's objects; no I/O.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

import discord

from bots.common.commands import Call
from bots.common.intake import Kept
from bots.common.support import SupportMessage
from bots.discord.access import Who

ANSWERED_TYPES = (discord.MessageType.default, discord.MessageType.reply)


def thread_of(channel) -> str:
    """The thread's id when `channel` is a thread, else ""."""
    return str(channel.id) if isinstance(channel, discord.Thread) else ""


def who_of(user: discord.abc.User, channel, guild_id: int | None) -> Who:
    roles = frozenset(str(r.id) for r in getattr(user, "roles", ()) or ())
    parent = getattr(channel, "parent_id", None) if isinstance(channel, discord.Thread) else None
    return Who(user_id=str(user.id), channel_id=str(getattr(channel, "id", "") or ""),
               guild_id=str(guild_id) if guild_id else None, parent_id=str(parent) if parent else None,
               role_ids=roles, is_bot=user.bot)


def heard(message: discord.Message, me: discord.abc.User | None) -> bool:
    """A message someone else said (not a join, a pin or Confab's own)."""
    return me is not None and message.author.id != me.id and message.type in ANSWERED_TYPES


def addressed(message: discord.Message, me: discord.abc.User, listen_channels: tuple[str, ...]) -> bool:
    """A DM, a mention, a message in a channel Confab listens to, or a reply to Confab."""
    if message.guild is None:
        return True
    if me in message.mentions:
        return True
    if {str(message.channel.id), str(getattr(message.channel, "parent_id", "") or "")} & set(listen_channels):
        return True
    ref = message.reference
    return bool(ref and isinstance(ref.resolved, discord.Message) and ref.resolved.author.id == me.id)


def conversation_of(message: discord.Message) -> str:
    """The store's key for the message's memory: its thread, a DM, or its reply chain."""
    if isinstance(message.channel, discord.Thread):
        return f"discord:thread:{message.channel.id}"
    if message.guild is None and message.reference is None:
        return f"discord:dm:{message.channel.id}"
    return f"discord:{message.channel.id}:{message.id}"


@dataclass(frozen=True)
class KeptMessage(Kept):
    """A message addressed to Confab: fetched again to be answered after a restart."""
    kind: ClassVar[str] = "message"
    channel: str
    message: str
    who: Who

    def to_record(self) -> dict:
        return {"kind": self.kind, "channel": self.channel, "message": self.message, "who": self.who.to_record()}

    @classmethod
    def of(cls, record: dict) -> KeptMessage:
        return cls(record["channel"], record["message"], Who.from_record(record["who"]))


@dataclass(frozen=True)
class KeptQuestion(Kept):
    """A support channel's question, open until the desk has done with it."""
    kind: ClassVar[str] = "support"
    guild: str
    question: SupportMessage

    def to_record(self) -> dict:
        return {"kind": self.kind, "question": dataclasses.asdict(self.question), "guild": self.guild}

    @classmethod
    def of(cls, record: dict) -> KeptQuestion:
        return cls(record.get("guild", ""), SupportMessage.of(record["question"]))


@dataclass(frozen=True)
class Interacted:
    """An interaction Confab answers (a slash command, a template's form, a Re-roll click), as
    kept before its defer: who, where, and its follow-up webhook (application id and token,
    which live 15 minutes from `at`), so that it can be answered after a restart too."""
    kind: str                   # "slash", "template" or "reroll"
    who: Who
    channel: str
    thread: str                 # the thread's id when it came from one
    app: str
    token: str
    at: float
    call: Call                  # the command (a template's name; "reroll")
    attachment: dict | None = None      # a slash command's file, as discord.py's to_dict
    values: dict = field(default_factory=dict)      # a template's slots
    job: str = ""               # the job a Re-roll draws again

    @classmethod
    def of(cls, interaction: discord.Interaction, who: Who, kind: str, call: Call, **more) -> Interacted:
        return cls(kind, who, str(interaction.channel_id), thread_of(interaction.channel),
                   str(interaction.application_id), interaction.token, interaction.created_at.timestamp(),
                   call, **more)

    def to_record(self) -> dict:
        record = {"kind": self.kind, "who": self.who.to_record(), "thread": self.thread,
                  "channel": self.channel, "app": self.app, "token": self.token, "at": self.at,
                  "name": self.call.name, "arg": self.call.arg}
        if self.call.options:
            record["options"] = dict(self.call.options)
        if self.kind == "slash":
            record["attachment"] = self.attachment
        if self.kind == "template":
            record["values"] = self.values
        if self.kind == "reroll":
            record["job"] = self.job
        return record

    @classmethod
    def of_record(cls, record: dict) -> Interacted:
        return cls(record["kind"], Who.from_record(record["who"]), record["channel"], record.get("thread", ""),
                   record.get("app", ""), record.get("token", ""), float(record.get("at") or 0),
                   Call(record.get("name", ""), record.get("arg", ""), record.get("options") or {}),
                   record.get("attachment"), record.get("values") or {}, record.get("job", ""))
