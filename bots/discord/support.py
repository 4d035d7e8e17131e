"""Support channels on Discord: the shared `SupportDesk` (bots/common/support.py) on Discord's terms.

A new top-level question in a support channel is answered in a thread started from it (the
thread's id is the question's id, so the desk's thread key is the same on both platforms), with
citations and Helpful / Not helpful buttons, or handed over. Every message in a support channel
or in one of its threads goes to the desk and to nothing else: a member holding the support
role who writes in a thread makes Confab stand down there. "Not helpful" and a hand-over left
unanswered ping the support role in the thread, with allowed_mentions naming only that role.
"""
from __future__ import annotations

import logging
import re
from collections import OrderedDict

import discord

from bots.common.render import split_message
from bots.common.support import DoorDesk, SupportAction, SupportDesk, SupportMessage
from bots.discord import history
from bots.discord.buttons import FeedbackButton, view_of

log = logging.getLogger(__name__)

LIMIT = 2000
THREAD_NAME_LIMIT = 100
THREAD_ALREADY_CREATED = 160004     # Discord's JSON error code: the message already has a thread
MAX_KNOWN_THREADS = 10_000
THREAD_LOOK = 100          # messages read in a question's thread before answering it after a restart
NO_MENTIONS = discord.AllowedMentions.none()


def thread_name(question: str) -> str:
    """The question's first line, as a thread name (Discord: 1 to 100 characters)."""
    line = " ".join((question or "").split("\n", 1)[0].split())
    if len(line) > THREAD_NAME_LIMIT:
        line = line[:THREAD_NAME_LIMIT - 1].rsplit(" ", 1)[0] + "…"
    return line or "Support question"


def ping_mentions(text: str) -> discord.AllowedMentions:
    """Allowed mentions for a ping: exactly the role and people it names, nobody else."""
    roles = [discord.Object(int(r)) for r in re.findall(r"<@&(\d+)>", text)]
    users = [discord.Object(int(u)) for u in re.findall(r"<@!?(\d+)>", text)]
    return discord.AllowedMentions(everyone=False, roles=roles or False, users=users or False,
                                   replied_user=False)


class DiscordSupport(DoorDesk):
    platform = "discord"

    def __init__(self, desk: SupportDesk, client: discord.Client, escalate_every_s: float = 60.0):
        self.client = client
        # question id (= its thread's id) -> support channel id: replies in a thread Discord's
        # cache does not know (no THREAD_CREATE seen) still find their channel
        self._questions: OrderedDict[int, int] = OrderedDict()
        super().__init__(desk, escalate_every_s)

    def where(self, channel) -> tuple[str, str] | None:
        """(support channel id, thread id or "") when `channel` is a support channel or a thread
        of one; None elsewhere."""
        if isinstance(channel, discord.Thread):
            parent, thread = channel.parent_id, channel.id
        elif getattr(channel, "id", None) in self._questions:
            parent, thread = self._questions[channel.id], channel.id
        else:
            parent, thread = getattr(channel, "id", None), None
        if parent is None or not self.desk.is_support_channel("discord", str(parent)):
            return None
        return str(parent), str(thread or "")

    def _remember(self, question_id: int, channel_id: int) -> None:
        self._questions[question_id] = channel_id
        while len(self._questions) > MAX_KNOWN_THREADS:
            self._questions.popitem(last=False)

    def message_of(self, message: discord.Message, where: tuple[str, str]) -> SupportMessage:
        channel, thread = where
        me = self.client.user
        author = message.author
        roles = tuple(str(r.id) for r in getattr(author, "roles", ()) or ())
        return SupportMessage("discord", channel, str(author.id), history.clean(message.content, me.id),
                              str(message.id), thread, is_bot=author.bot or author.id == me.id,
                              memberships=roles, mine=author.id == me.id)

    async def on_message(self, msg: SupportMessage) -> None:
        if not msg.thread:
            self._remember(int(msg.id), int(msg.channel))
        action = await self.desk.on_message(msg)
        if action is not None:
            await self.post(action, question=msg.text)

    async def answer_again(self, msg: SupportMessage, guild_id: str) -> None:
        """A question kept before a restart: its thread (when there is one) is read first, for
        Confab's own reply and for a support person's (their roles fetched: a message read over
        REST does not carry them)."""
        self._remember(int(msg.id), int(msg.channel))
        thread = self.client.get_partial_messageable(int(msg.id), type=discord.ChannelType.public_thread)
        try:
            messages = [m async for m in thread.history(limit=THREAD_LOOK)
                        if m.type in (discord.MessageType.default, discord.MessageType.reply)]
        except discord.NotFound:           # no thread yet: nobody replied
            messages = []
        me = self.client.user
        roles: dict[int, tuple[str, ...]] = {}
        for author in {m.author.id: m.author for m in messages}.values():
            if author.bot or not guild_id:
                continue
            try:
                member = await self.client.http.get_member(int(guild_id), author.id)
                roles[author.id] = tuple(str(r) for r in member.get("roles") or ())
            except discord.NotFound:       # no longer in the server
                pass
        replies = [SupportMessage("discord", msg.channel, str(m.author.id), history.clean(m.content, me.id),
                                  str(m.id), msg.id, is_bot=m.author.bot or m.author.id == me.id,
                                  memberships=roles.get(m.author.id, ()), mine=m.author.id == me.id)
                   for m in reversed(messages)]
        action = await self.desk.answer_again(msg, replies)
        if action is not None:
            await self.post(action, question=msg.text)

    async def _thread(self, action: SupportAction, question: str) -> discord.abc.Messageable:
        """The question's thread, started from it for a first reply (or already there: someone
        opened it first, and it has the same id)."""
        thread_id = int(action.thread)
        if action.kind == "reply":
            try:
                await self.client.http.start_thread_with_message(
                    int(action.channel), thread_id, name=thread_name(question), auto_archive_duration=1440)
            except discord.HTTPException as e:
                if e.code != THREAD_ALREADY_CREATED:
                    raise
        return self.client.get_partial_messageable(thread_id, type=discord.ChannelType.public_thread)

    async def post(self, action: SupportAction, question: str = "") -> discord.Message | None:
        thread = await self._thread(action, question)
        if action.kind == "ping":
            return await thread.send(action.text[:LIMIT], allowed_mentions=ping_mentions(action.text))
        pieces = split_message(action.text, LIMIT) or [" "]
        sent = None
        for i, piece in enumerate(pieces):
            view = None
            if action.buttons and i == len(pieces) - 1:
                view = view_of(FeedbackButton(True, action.outcome_id, action.channel),
                               FeedbackButton(False, action.outcome_id, action.channel))
            kw = {"view": view} if view is not None else {}
            sent = await thread.send(piece, allowed_mentions=NO_MENTIONS, suppress_embeds=True, **kw)
            if view is not None:
                view.stop()           # clicks go to the dynamic item, not to a stored view
        return sent

    async def feedback(self, interaction: discord.Interaction, helpful: bool, outcome_id: int | None,
                       channel: str) -> None:
        """A Helpful / Not helpful press (acknowledged already), in the question's thread."""
        async def tell(text: str) -> None:
            await interaction.followup.send(text, ephemeral=True)
        await self.record_feedback(channel, str(interaction.channel_id), outcome_id, helpful, tell)
