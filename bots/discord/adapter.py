"""Confab on Discord: gateway events and interactions in, engine jobs out.

A thin translator: what Discord sends comes in through the client (`client.py`, which wires
messages, slash commands, forms and buttons to this adapter's listeners); `events.py` says
whether a message is addressed to Confab, who asks from where and which conversation it belongs
to; access and priority are `access.py`'s, the reply chain's memory `history.py`'s. The text, or
a slash command's typed `Call`, goes to the shared command set with a Discord `Reply`
(`reply.py`). Voice messages go through the shared voice-note handler (bots/common/speech.py;
how they look here is `voice.py`'s), images with a question to the shared image commands.

A message, a slash command, a template's form and a Re-roll click are kept in the store, as the
typed record of its kind (`events.py`), before anything else is done with them (before the
defer, for an interaction), through the intake every door shares (bots/common/intake.py: it
also guards every answer, so that a failure becomes a short reply, and sends the jobs running
before a restart to where their answers went); once connected after a restart, `replay` answers
the ones no job had taken up yet, as Discord never sends an event again. So is a support
channel's question, open until the desk has done with it; after a restart the desk answers it
unless its thread shows an answer already.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

import discord

from bots.common.acks import AckClock
from bots.common.commands import Call, Commands, Request
from bots.common.delivery import Delivery, Where
from bots.common.image_commands import (
    ImagineSpec,
    answer_about_images,
    run_imagine,
)
from bots.common.intake import Cancelled, Intake, kept_of
from bots.common.speech import answer_voice_note
from bots.discord import files, history
from bots.discord.access import DiscordAccess, Who
from bots.discord.client import ConfabClient, Listeners, point_at
from bots.discord.events import (
    Interacted,
    KeptMessage,
    KeptQuestion,
    addressed,
    heard,
    thread_of,
    who_of,
)
from bots.discord.reply import (
    ChannelReply,
    ClickReply,
    DiscordReply,
    FormReply,
    InteractionReply,
    MessageReply,
    Replies,
)
from bots.discord.settings import DiscordSettings
from bots.discord.slash import PRIVATE
from bots.discord.support import DiscordSupport
from bots.discord.voice import VOICE_FILENAME, VOICE_NOTE
from engine import Engine, Origin
from engine.flows import templates
from engine.work.speech import submit_speech

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 10.0
CANCEL_WORDS = {Cancelled.FINISHED: "That job has already finished.",
                Cancelled.NOT_YOURS: "That job is not yours to cancel."}


class DiscordAdapter:
    def __init__(self, engine: Engine, commands: Commands, settings: DiscordSettings, *,
                 guild_ready_timeout: float = 2.0, identify_delay: float = 5.0, desk=None,
                 escalate_every_s: float = 60.0):
        """`settings`: Discord's own (the engine's are `engine.settings`); `desk`: the support
        desk (bots/common/support.py) when support channels are set up; `escalate_every_s`: how
        often hand-overs are checked for escalation."""
        self.engine, self.commands = engine, commands
        self.desk, self.escalate_every_s = desk, escalate_every_s
        self.owned_desk = None           # set by bots/discord/__init__.py when it opened the desk
        self.support = None
        self.settings = settings
        self.access = DiscordAccess(settings, engine.settings.admins)
        self.acks = AckClock("Discord")         # receipt to first response: Discord's 3 s
        self.intake = Intake(engine, "discord", self)
        listeners = Listeners(message=self.on_message, first_ready=lambda: self.intake.spawn(self.replay()),
                              slash=self.run_slash, template=self.open_template, form=self.run_template,
                              cancel=self.cancel_clicked, speak=self.speak_clicked,
                              reroll=self.reroll_clicked, feedback=self.feedback_clicked)
        self.client = ConfabClient(listeners, self.acks, self.settings.discord_guild_ids,
                                   guild_ready_timeout=guild_ready_timeout, identify_delay=identify_delay)
        self.replies = Replies(engine, self.settings, self.client)
        self._task: asyncio.Task | None = None
        self._restore: Callable[[], None] | None = None
        self.pipelines = self.intake.pipelines   # first job id -> running voice note
        self._tasks = self.intake.tasks          # the work after acks, that stop() cancels

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self.engine.on_resume("discord", self.intake.resume)
        self._restore = point_at(self.settings.discord_api_url, self.settings.discord_gateway_url)
        try:
            await self.client.login(self.settings.discord_bot_token)
        except BaseException:
            await self.client.close()
            self._restore()
            raise
        if self.desk is not None:
            self.support = DiscordSupport(self.desk, self.client, self.escalate_every_s)
        self._task = asyncio.create_task(self._connect(), name="confab-discord-gateway")

    async def _connect(self) -> None:
        try:
            await self.client.connect(reconnect=True)
        except discord.PrivilegedIntentsRequired:
            log.error("Discord refused the Message Content intent. Enable it for the bot in the "
                      "developer portal (Bot > Privileged Gateway Intents > Message Content Intent).")
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the Discord gateway connection ended")

    async def wait_until_ready(self, timeout: float) -> None:
        await asyncio.wait_for(self.client.ready.wait(), timeout)

    async def stop(self) -> None:
        if self.support is not None:
            await self.support.stop()
        await self.intake.stop()
        await self.client.close()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, STOP_TIMEOUT_S)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self._task.cancel()
        if self._restore is not None:
            self._restore()
            self._restore = None
        if self.owned_desk is not None:
            await asyncio.to_thread(self.owned_desk.close)
            self.owned_desk = None

    # -- who, where ----------------------------------------------------------------------------

    def origin_of(self, who: Who, channel) -> Origin:
        return self.access.origin(who, thread=thread_of(channel))

    # -- messages --------------------------------------------------------------------------------

    async def on_message(self, message: discord.Message) -> None:
        if not heard(message, self.client.user):
            return
        where = self.support.where(message.channel) if self.support is not None else None
        if where is not None:       # a support channel or one of its threads: the desk's alone
            await self._on_support_message(message, where)
            return
        if message.author.bot and not self.access.answers_bot(str(message.author.id)):
            return
        if not addressed(message, self.client.user, self.settings.discord_listen_channels):
            return
        who = who_of(message.author, message.channel, message.guild.id if message.guild else None)
        key = f"discord:message:{message.id}"
        if await self.intake.keep(key, KeptMessage(str(message.channel.id), str(message.id), who)):
            await self._answer(key, message, who)

    async def _on_support_message(self, message: discord.Message, where: tuple[str, str]) -> None:
        msg = self.support.message_of(message, where)
        if not self.support.takes(msg):             # not a question the desk answers: kept nowhere
            await self.intake.quietly(self.support.on_message(msg))
            return
        key = f"discord:message:{message.id}"
        guild = str(message.guild.id) if message.guild else ""
        if await self.intake.keep(key, KeptQuestion(guild, msg)):
            await self.intake.answer_quietly(key, self.support.on_message(msg))

    async def _answer(self, key: str, message: discord.Message, who: Who) -> None:
        reply = MessageReply(self.replies, message)
        await self.intake.answer(key, reply, self._answer_message(message, reply, who))

    async def _answer_message(self, message: discord.Message, reply: MessageReply, who: Who) -> None:
        refusal = self.access.check(who)
        if refusal:
            await reply.say(refusal)
            return
        text = history.clean(message.content, self.client.user.id)
        request = Request(self.origin_of(who, message.channel), reply.conversation, text,
                          attachments=list(message.attachments))
        request.history = await self.history_of(message)
        audio = [a for a in message.attachments if message.flags.voice or files.is_audio(a)]
        images = [a for a in message.attachments if files.is_image(a)]
        limits = self.engine.settings
        if audio:
            data = await files.download(audio[0], limits.max_audio_bytes, self.settings.discord_api_url)
            await answer_voice_note(self.commands, request, data, reply, VOICE_NOTE, pipelines=self.pipelines)
        elif images and not text.startswith("/"):
            request.attachments = [files.DiscordFile(a, limits.max_image_bytes, self.settings.discord_api_url)
                                   for a in images]
            await answer_about_images(self.commands, request, text, reply)
        elif text:
            await self.commands.handle(request, reply)
        elif message.attachments:
            await reply.say("📎 I can read text and voice messages here. Tell me in words what you "
                            "want to know about the file.")
        else:
            await reply.say("👋 Yes? Ask me something after the mention, or try /help.")

    async def history_of(self, message: discord.Message) -> list[tuple[str, str]] | None:
        """The reply chain (or thread) as memory; None lets the store answer (a DM)."""
        limit = self.engine.settings.history_messages
        if message.reference is not None:
            return await history.reply_chain(self.client, message, limit)
        if isinstance(message.channel, discord.Thread):
            return await history.thread_history(self.client, message, limit)
        if message.guild is None:
            return None
        return []

    # -- interactions ------------------------------------------------------------------------

    async def run_slash(self, interaction: discord.Interaction, call: Call,
                        attachment: discord.Attachment | None) -> None:
        who = who_of(interaction.user, interaction.channel, interaction.guild_id)
        refusal = self.access.check(who)
        if refusal:
            await interaction.response.send_message(refusal, ephemeral=True)
            return
        event = Interacted.of(interaction, who, "slash", call,
                              attachment=attachment.to_dict() if attachment is not None else None)
        key = await self._keep_then_defer(interaction, event, thinking=True, ephemeral=call.name in PRIVATE)
        if key is not None:
            await self._answer_slash(key, event, InteractionReply.of(self.replies, interaction), attachment)

    async def _keep_then_defer(self, interaction: discord.Interaction, event: Interacted, **defer) -> str | None:
        """Keep the interaction, then defer it; its key, or None when it was kept before."""
        key = f"discord:interaction:{interaction.id}"
        kept = await self.intake.keep_then_ack(key, event, lambda: interaction.response.defer(**defer))
        return key if kept else None

    async def _answer_slash(self, key: str, event: Interacted, reply: DiscordReply, attachment) -> None:
        await self._answer_interaction(key, event, reply,
                                       lambda request: self._slash(request, event.call, attachment, reply))

    async def _answer_interaction(self, key: str, event: Interacted, reply: DiscordReply,
                                  work: Callable[[Request], Awaitable[None]]) -> None:
        request = Request(self.access.origin(event.who, thread=event.thread),
                          f"discord:{event.channel}:{event.who.user_id}", attachments=[])
        reply.conversation = request.conversation
        await self.intake.answer(key, reply, work(request))

    async def open_template(self, interaction: discord.Interaction, name: str, given: dict) -> None:
        """A writing template from a slash command: a modal for the text slots the options did
        not give (as the first response: Discord allows no modal after a defer), else straight on."""
        who = who_of(interaction.user, interaction.channel, interaction.guild_id)
        refusal = self.access.check(who)
        if refusal:
            await interaction.response.send_message(refusal, ephemeral=True)
            return
        template = templates.get(name)
        given = {k: v for k, v in given.items() if v is not None and str(v).strip()}
        if template.missing(given):
            await interaction.response.send_modal(self.client.modal(template, given, interaction))
            return
        await self.run_template(interaction, template, given)

    async def run_template(self, interaction: discord.Interaction, template, values: dict) -> None:
        """The template's command with its slots filled in, answered in follow-ups."""
        who = who_of(interaction.user, interaction.channel, interaction.guild_id)
        event = Interacted.of(interaction, who, "template", Call(template.name), values=values)
        key = await self._keep_then_defer(interaction, event, thinking=True)
        if key is not None:
            reply = FormReply.of(self.replies, interaction, values)
            await self._answer_interaction(key, event, reply,
                                           lambda request: self.commands.run(request, event.call, reply))

    async def _slash(self, request: Request, call: Call, attachment: discord.Attachment | None,
                     reply: DiscordReply) -> None:
        if attachment is not None:        # fetched here, from Discord's hosts only
            request.attachments = [await files.download(attachment, self.engine.settings.max_audio_bytes,
                                                        self.settings.discord_api_url)]
        await self.commands.run(request, call, reply)

    async def _say_aloud(self, origin: Origin, text: str, reply: DiscordReply) -> None:
        handle = await submit_speech(self.engine, text, origin, response_format="ogg", check_length=False)
        speech = await asyncio.wait_for(handle.result(), self.engine.settings.job_timeout_s)
        await reply.send_file(speech.audio, VOICE_FILENAME, title=speech.note, voice=True,
                              duration_s=speech.duration_s, waveform=speech.waveform)

    async def cancel_clicked(self, interaction: discord.Interaction, job_id: str) -> None:
        who = who_of(interaction.user, interaction.channel, interaction.guild_id)

        async def is_admin() -> bool:
            return self.access.is_admin(who)
        outcome = await self.intake.cancel(job_id, f"discord:{who.user_id}", is_admin)
        await interaction.followup.send(CANCEL_WORDS.get(outcome) or f"🛑 Cancelled {job_id}.", ephemeral=True)

    async def reroll_clicked(self, interaction: discord.Interaction, job_id: str) -> None:
        """The same picture request as job `job_id` (from its stored record), with a new seed,
        drawn by and for the person who clicked, in a message of its own. The click is kept
        before its defer, as a slash command is."""
        who = who_of(interaction.user, interaction.channel, interaction.guild_id)
        refusal = self.access.check(who)
        if refusal:
            await interaction.response.send_message(refusal, ephemeral=True)
            return
        event = Interacted.of(interaction, who, "reroll", Call("reroll"), job=job_id)
        key = await self._keep_then_defer(interaction, event, thinking=True)    # the picture's own message
        if key is not None:
            reply = InteractionReply.of(self.replies, interaction)
            await self._answer_interaction(key, event, reply, lambda request: self._reroll(request, reply, job_id))

    async def _reroll(self, request: Request, reply: DiscordReply, job_id: str) -> None:
        record = await self.engine.store.get_job(job_id)
        job = (record or {}).get("payload") or {}
        if (record or {}).get("kind") != "image" or not job.get("prompt"):
            await reply.say("I no longer have that picture's request. Ask again with /imagine.")
            return
        spec = ImagineSpec(job["prompt"], job.get("seed"), job.get("steps") or 0, job.get("width") or 0,
                           job.get("height") or 0, job.get("n") or 1, job.get("model") or "")
        await run_imagine(self.commands, request, reply, spec.reroll())

    async def speak_clicked(self, interaction: discord.Interaction) -> None:
        message = interaction.message
        reply = ClickReply(self.replies, interaction)      # words go only to the clicker
        who = who_of(interaction.user, interaction.channel, interaction.guild_id)
        refusal = self.access.check(who)
        if refusal:
            await reply.say(refusal)
            return
        text = history.clean(message.content if message else "", self.client.user.id)
        if text.startswith("🎙️"):
            text = text.split("\n\n", 1)[-1]           # not the transcript, only the answer
        await self.intake.guard(reply, self._say_aloud(self.origin_of(who, interaction.channel), text, reply))

    async def feedback_clicked(self, interaction: discord.Interaction, helpful: bool, outcome_id: int | None,
                               channel: str) -> None:
        if self.support is None:
            await interaction.followup.send("Support answers are not set up here any more.", ephemeral=True)
            return
        await self.support.feedback(interaction, helpful, outcome_id, channel)

    # -- after a restart ----------------------------------------------------------------------

    async def replay(self) -> int:
        """Answer the messages and slash commands kept before a restart that no job had taken up
        yet; returns how many."""
        return await self.intake.replay(self._replay)

    async def _replay(self, key: str, record: dict) -> None:
        try:
            kind = record.get("kind")
            kept = kept_of(record, (KeptMessage, KeptQuestion))
            if kind in ("slash", "reroll", "template"):
                event = Interacted.of_record(record)
                reply = self.replies.of_token(event.channel, event.app, event.token, event.at)
            if kind == "slash":
                attachment = files.KeptAttachment.of(event.attachment) if event.attachment else None
                await self._answer_slash(key, event, reply, attachment)
            elif kind == "reroll":
                await self._answer_interaction(key, event, reply,
                                               lambda request: self._reroll(request, reply, event.job))
            elif kind == "template":
                if not isinstance(reply, InteractionReply):   # the form's values go only with its token
                    log.info("not answering %s after the restart: its interaction's token expired", key)
                    await self.engine.settle(key)
                    return
                form = FormReply(self.replies, reply.channel_id, reply.followup, event.at, event.values)
                await self._answer_interaction(key, event, form,
                                               lambda request: self.commands.run(request, event.call, form))
            elif isinstance(kept, KeptQuestion):
                if self.support is None or not self.support.takes(kept.question):   # no longer a support channel
                    await self.engine.settle(key)
                    return
                await self.intake.answer_quietly(key, self.support.answer_again(kept.question, kept.guild))
            elif isinstance(kept, KeptMessage):
                channel_id = int(kept.channel)
                channel = self.client.get_channel(channel_id) or await self.client.fetch_channel(channel_id)
                message = await channel.fetch_message(int(kept.message))
                await self._answer(key, message, kept.who)
            else:
                await self.engine.settle(key)
        except (discord.NotFound, discord.Forbidden) as e:    # deleted, or no longer ours to read
            log.info("not answering %s after the restart: %s", key, e)
            await self.engine.settle(key)
        except discord.HTTPException as e:
            log.warning("could not answer %s after the restart yet: %s", key, e)

    def reply_for(self, where: Where) -> DiscordReply:
        """Where a job accepted before a restart answers (the intake's resume asks): the
        interaction's follow-ups while its token lives, else the channel."""
        if isinstance(where.interaction, dict):
            i = where.interaction
            reply = self.replies.of_token(where.channel, i.get("app", ""), i.get("token", ""), float(i.get("at") or 0))
        else:
            reply = ChannelReply(self.replies, int(where.channel), int(where.reply_to) if where.reply_to else None)
        reply.conversation = where.conversation
        return reply

    async def earlier(self, reply: DiscordReply, delivery: Delivery) -> list:
        if isinstance(reply, InteractionReply):    # follow-ups are edited through the webhook
            return [await reply.followup.fetch_message(int(m)) for m in delivery.messages]
        partial = self.client.get_partial_messageable(reply.channel_id)
        return [partial.get_partial_message(int(m)) for m in delivery.messages]

    def refused(self, error: Exception) -> str | None:
        """Discord's own failures in words (the intake's guard asks)."""
        if isinstance(error, asyncio.TimeoutError):
            return "⌛ That took too long and was stopped. Please try again."
        if isinstance(error, discord.HTTPException):
            log.warning("Discord refused a reply: %s", error)
            return "💥 Discord refused my answer. An admin can check the logs."
        return None
