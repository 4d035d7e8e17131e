"""How Confab answers on Discord: the shared `Reply` protocol for a message (a mention, a DM, a
voice message), for an interaction (a slash command, deferred at once) and for a click.

Streaming is a placeholder message edited at most once per `CONFAB_DISCORD_EDIT_INTERVAL`
(discord.py waits out Discord's rate-limit buckets and 429s), moving on to a new message at
2,000 characters. While a job runs its message carries a Cancel button; a finished text answer
carries "Speak this"; a finished /imagine picture's status message carries "Re-roll".

Every reply is given a `Replies`: what it needs from the rest of Confab (the engine, the
settings, discord.py's client), and the maker of the replies that no live event makes.
"""
from __future__ import annotations

import io
import logging
import time
from typing import AsyncIterator

import discord

from bots.common.delivery import Delivery, Where
from bots.common.render import ThrottledStream, split_message
from bots.discord.buttons import CancelButton, RerollButton, SpeakButton, job_id_in, view_of
from bots.discord.events import conversation_of
from bots.discord.settings import DiscordSettings
from bots.discord.voice import send_voice_message
from engine import Engine
from engine.flows.templates import Template

UNCHANGED = object()    # a message's buttons stay as they are (None would remove them)

log = logging.getLogger(__name__)

LIMIT = 2000
PLACEHOLDER = "⏳ …"
NO_MENTIONS = discord.AllowedMentions.none()
INTERACTION_TOKEN_S = 14 * 60     # Discord's interaction tokens live 15 minutes


def followup_webhook(client: discord.Client, application_id: int | str, token: str) -> discord.Webhook:
    """An interaction's follow-up webhook from its application id and token, made as
    `Interaction.followup` makes it: after a restart the Interaction is gone, its token not."""
    return discord.Webhook.from_state({"id": int(application_id), "type": 3, "token": token},
                                      client._connection)


class Replies:
    """What a reply needs: the engine (its jobs, the store where an answer's messages are
    noted, whether it can speak), the settings, and discord.py's client to post with."""

    def __init__(self, engine: Engine, settings: DiscordSettings, client: discord.Client):
        self.engine, self.settings, self.client = engine, settings, client

    def can_speak(self) -> bool:
        return bool(self.engine.installed("tts"))

    def of_token(self, channel: str, app: str, token: str, at: float) -> "DiscordReply":
        """Follow-ups of an interaction while its token lives; after that, the channel."""
        if token and time.time() - at < INTERACTION_TOKEN_S:
            return InteractionReply(self, int(channel), followup_webhook(self.client, app, token), at)
        return ChannelReply(self, int(channel))


class DiscordReply:
    """What every kind of reply shares: streaming with buttons, files and voice messages."""

    def __init__(self, replies: Replies, channel_id: int, reply_to: int | None = None):
        self.replies, self.channel_id, self.reply_to = replies, channel_id, reply_to
        self.conversation = ""
        self.earlier: list = []     # messages posted for this job before a restart, to edit
        self.interaction: dict | None = None    # an interaction's follow-up webhook, kept with the job
        self._controls: dict[int, tuple[str, bool]] = {}    # /imagine status message id -> (job id, done)

    # -- to implement ----------------------------------------------------------------------

    async def _post(self, text: str, view: discord.ui.View | None = None) -> discord.Message:
        raise NotImplementedError

    async def _post_file(self, file: discord.File, text: str) -> object:
        raise NotImplementedError

    # -- the Reply protocol ------------------------------------------------------------------

    async def say(self, text: str) -> object:
        first = None
        for piece in split_message(text, LIMIT):
            msg = await self._post(piece)
            first = first or msg
        return first

    async def private(self, text: str) -> object:
        return await self.say(text)

    async def update(self, ref: object, text: str) -> None:
        controls = self._controls.get(getattr(ref, "id", None))
        if controls is None:
            await ref.edit(content=text[:LIMIT])
            return
        await self._edit_with_view(ref, self._image_view(ref.id, *controls), content=text[:LIMIT])

    async def image_controls(self, ref: object, job_id: str, spec, done: bool) -> None:
        """Buttons on an /imagine status message: Cancel while queued or drawing, Re-roll after."""
        if ref is None or getattr(ref, "id", None) is None:
            return
        self._controls[ref.id] = (job_id, done)
        await self._edit_with_view(ref, self._image_view(ref.id, job_id, done))

    def _image_view(self, message_id: int, job_id: str, done: bool) -> discord.ui.View | None:
        if done:
            return view_of(RerollButton(job_id))
        handle = self.replies.engine.handle(job_id)
        if handle is None or handle.done:          # failed or cancelled: no button left
            self._controls.pop(message_id, None)
            return None
        return view_of(CancelButton(job_id))

    @staticmethod
    async def _edit_with_view(ref, view: discord.ui.View | None, **fields) -> None:
        await ref.edit(view=view, **fields)
        if view is not None:
            view.stop()           # clicks go to the dynamic item, not to a stored view

    def where(self) -> Where:
        """Where the answer goes, as kept with its job."""
        return Where(str(self.channel_id), self.conversation, reply_to=str(self.reply_to or ""),
                     interaction=self.interaction)

    async def stream(self, chunks: AsyncIterator[str], status: str = "") -> str:
        job_id = job_id_in(status)
        first_view = view_of(CancelButton(job_id)) if job_id else None
        posted: list[discord.Message] = list(self.earlier)
        delivery = None
        if job_id:      # where the answer goes, kept with the job so a restart can finish it
            delivery = Delivery(self.replies.engine.store, job_id, self.where(), [str(m.id) for m in self.earlier])
            await delivery.save()

        async def post(text: str) -> discord.Message:
            msg = await self._post(text, first_view if not posted else None)
            posted.append(msg)
            if delivery is not None:
                await delivery.posted(msg.id)
            return msg

        whole: list[str] = []
        ended = False
        buttons_done: set[int] = set()

        async def until_end() -> AsyncIterator[str]:
            nonlocal ended
            async for chunk in chunks:
                whole.append(chunk)
                yield chunk
            ended = True

        async def edit(msg: discord.Message, text: str) -> None:
            # The final text and the final buttons go in one edit, not two.
            view = self._final_view(posted, msg, job_id, "".join(whole)) if ended else UNCHANGED
            if view is UNCHANGED:
                await msg.edit(content=text)
                return
            buttons_done.add(msg.id)
            await self._edit_with_view(msg, view, content=text)

        stream = ThrottledStream(post, edit, LIMIT, interval=self.replies.settings.discord_edit_interval_s,
                                 placeholder=PLACEHOLDER)
        stream.refs, stream.shown = list(self.earlier), [""] * len(self.earlier)
        text = await stream.run(until_end())
        for msg in posted:    # those the last render did not edit (their text was already final)
            if msg.id not in buttons_done:
                view = self._final_view(posted, msg, job_id, text)
                if view is not UNCHANGED:
                    await self._edit_with_view(msg, view)
        return text

    def _final_view(self, posted: list[discord.Message], msg: discord.Message, job_id: str | None,
                    text: str) -> object:
        """The buttons an answer's message ends with: "Speak this" on the last message of a
        finished answer, none on the first (its Cancel button goes); UNCHANGED for the others."""
        if posted and msg is posted[-1] and text.strip() and self.replies.can_speak():
            handle = self.replies.engine.handle(job_id) if job_id else None
            if handle is None or handle.status == "done":
                return view_of(SpeakButton())
        if job_id and posted and msg is posted[0]:
            return None
        return UNCHANGED

    async def send_file(self, data: bytes, filename: str, title: str = "", voice: bool = False,
                        duration_s: float = 0.0, waveform: bytes = b"") -> object:
        if voice:       # measured by the engine as it spoke: the clip is never decoded again here
            sent = await send_voice_message(self.replies.client.http, self.channel_id, data,
                                            duration_s, waveform or bytes(1), reply_to=self.reply_to)
            if title:
                await self._post(title)
            return sent
        return await self._post_file(discord.File(io.BytesIO(data), filename=filename), title)


class MessageReply(DiscordReply):
    """Answers to a message: replies to it (without pinging), then plain messages."""

    def __init__(self, replies: Replies, message: discord.Message):
        super().__init__(replies, message.channel.id, message.id)
        self.message = message
        self.conversation = conversation_of(message)
        self._replied = False

    async def _post(self, text: str, view: discord.ui.View | None = None) -> discord.Message:
        kw = {"allowed_mentions": NO_MENTIONS}
        if view is not None:
            kw["view"] = view
        if not self._replied:
            self._replied = True
            msg = await self.message.reply(text, mention_author=False, **kw)
        else:
            msg = await self.message.channel.send(text, **kw)
        if view is not None:
            view.stop()
        return msg

    async def _post_file(self, file: discord.File, text: str) -> object:
        return await self.message.channel.send(text or None, file=file, allowed_mentions=NO_MENTIONS)


class InteractionReply(DiscordReply):
    """Answers to a slash command that was deferred: the first follow-up fills in the
    "thinking…" message; private answers are ephemeral. Made from the interaction, or after a
    restart from its application id and token (`followup_webhook`) while the token lives."""

    def __init__(self, replies: Replies, channel_id: int, followup: discord.Webhook,
                 created_at: float):
        super().__init__(replies, channel_id)
        self.followup = followup
        self.interaction = {"app": str(followup.id), "token": followup.token, "at": created_at}

    @classmethod
    def of(cls, replies: Replies, interaction: discord.Interaction) -> "InteractionReply":
        return cls(replies, interaction.channel_id, interaction.followup,
                   interaction.created_at.timestamp())

    async def _post(self, text: str, view: discord.ui.View | None = None,
                    ephemeral: bool = False) -> discord.Message:
        kw = {"wait": True, "allowed_mentions": NO_MENTIONS, "ephemeral": ephemeral}
        if view is not None:
            kw["view"] = view
        msg = await self.followup.send(text, **kw)
        if view is not None:
            view.stop()
        return msg

    async def private(self, text: str) -> object:
        first = None
        for piece in split_message(text, LIMIT):
            msg = await self._post(piece, ephemeral=True)
            first = first or msg
        return first

    async def _post_file(self, file: discord.File, text: str) -> object:
        return await self.followup.send(text or discord.utils.MISSING, file=file, wait=True)


class FormReply(InteractionReply):
    """An interaction's reply whose template form is already filled in (by the modal or the
    options): the shared command asks `form` for the slots (bots/skills.py)."""

    def __init__(self, replies: Replies, channel_id: int, followup: discord.Webhook,
                 created_at: float, values: dict):
        super().__init__(replies, channel_id, followup, created_at)
        self.values = values

    @classmethod
    def of(cls, replies: Replies, interaction: discord.Interaction, values: dict) -> "FormReply":
        return cls(replies, interaction.channel_id, interaction.followup, interaction.created_at.timestamp(),
                   values)

    async def form(self, template: Template, values: dict) -> dict:
        return dict(self.values)


class ClickReply(DiscordReply):
    """Answers to a click on one of Confab's messages (deferred as an update): words go to the
    person who clicked alone, ephemeral; files and voice messages to the channel, in reply to
    the message."""

    def __init__(self, replies: Replies, interaction: discord.Interaction):
        message = interaction.message
        super().__init__(replies, interaction.channel_id, reply_to=message.id if message else None)
        self.followup = interaction.followup

    async def _post(self, text: str, view: discord.ui.View | None = None) -> object:
        return await self.followup.send(text, ephemeral=True)

    async def _post_file(self, file: discord.File, text: str) -> object:
        channel = self.replies.client.get_partial_messageable(self.channel_id)
        return await channel.send(text or None, file=file, allowed_mentions=NO_MENTIONS)


class ChannelReply(DiscordReply):
    """Answers posted straight to a channel by id (a job resumed after a restart)."""

    def __init__(self, replies: Replies, channel_id: int, reply_to: int | None = None):
        super().__init__(replies, channel_id, reply_to)
        self.channel = replies.client.get_partial_messageable(channel_id)
        self._replied = False

    async def _post(self, text: str, view: discord.ui.View | None = None) -> discord.Message:
        kw = {"allowed_mentions": NO_MENTIONS}
        if view is not None:
            kw["view"] = view
        if self.reply_to and not self._replied:
            kw["reference"] = discord.MessageReference(message_id=self.reply_to, channel_id=self.channel_id,
                                                       fail_if_not_exists=False)
        self._replied = True
        msg = await self.channel.send(text, **kw)
        if view is not None:
            view.stop()
        return msg

    async def _post_file(self, file: discord.File, text: str) -> object:
        return await self.channel.send(text or None, file=file, allowed_mentions=NO_MENTIONS)
