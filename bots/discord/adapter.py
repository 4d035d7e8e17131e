"""Confab on Discord: gateway events and interactions in, engine jobs out.

A thin translator: it decides whether an event is addressed to Confab, who asks from where
(access and priority in `access.py`), which conversation it belongs to (`history.py`), and
hands the text to the shared command set with a Discord `Reply` (`reply.py`). Voice messages go
through the voice-note path (`voice.py`), images with a question to the shared image commands.
Every failure becomes a short reply (`explain`).

A message, a slash command, a template's form and a Re-roll click are kept in the store before
anything else is done with them (before the defer, for an interaction; engine/intake.py); once connected after a restart, `replay`
answers the ones no job had taken up yet, as Discord never sends an event again. So is a support
channel's question, open until the desk has done with it; after a restart the desk answers it
unless its thread shows an answer already.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
from typing import Awaitable, Callable

import aiohttp
import discord
import discord.gateway
import discord.http
import yarl

from bots.common.acks import AckClock
from bots.common.commands import Commands, Request
from bots.common.delivery import Delivery
from bots.common.image_commands import ImagineSpec, answer_about_images, deliver, run_imagine
from bots.common.render import tokens_of
from bots.common.speech import answer_voice_note
from bots.common.support import SupportMessage
from bots.common.words import RESTARTED_MID_WAY
from bots.discord import files, history
from bots.discord.access import DiscordAccess, Who
from bots.discord.buttons import CancelButton, FeedbackButton, RerollButton, SpeakButton
from bots.discord.forms import FormReply, TemplateModal
from bots.discord.reply import (
    INTERACTION_TOKEN_S,
    ChannelReply,
    DiscordReply,
    InteractionReply,
    MessageReply,
    followup_webhook,
)
from bots.discord.slash import PRIVATE, build_tree
from bots.discord.support import DiscordSupport
from bots.discord.voice import VOICE_FILENAME, VOICE_NOTE
from engine import ConfabError, Engine, Origin
from engine.flows import templates
from engine.messages import explain
from engine.work.speech import submit_speech

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 10.0
ANSWERED_TYPES = (discord.MessageType.default, discord.MessageType.reply)
# What Confab does in a server: read and answer (in threads too), start support threads, attach
# audio and pictures, react, and send voice messages. README's invite link carries this number.
INVITE_PERMISSIONS = discord.Permissions(
    view_channel=True, send_messages=True, send_messages_in_threads=True, create_public_threads=True,
    read_message_history=True, attach_files=True, embed_links=True, add_reactions=True,
    use_application_commands=True, send_voice_messages=True)


def invite_url(application_id: int | str) -> str:
    return discord.utils.oauth_url(application_id, permissions=INVITE_PERMISSIONS,
                                   scopes=("bot", "applications.commands"))


def point_at(api_url: str, gateway_url: str) -> Callable[[], None]:
    """Send discord.py's REST calls to `api_url` and its first gateway connection to
    `gateway_url` (internals: `Route.BASE`, `DiscordWebSocket.DEFAULT_GATEWAY`); returns a
    function that restores them."""
    saved = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    if api_url:
        discord.http.Route.BASE = api_url.rstrip("/")
    if gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)

    def restore() -> None:
        discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = saved
    return restore


_CALLBACK = re.compile(r"/interactions/(\d+)/[^/]+/callback$")


def interaction_acks(acks: AckClock) -> aiohttp.TraceConfig:
    """Notes each interaction's first response (defer, message or modal) as Discord answers it."""
    async def on_request_end(session, context, params: aiohttp.TraceRequestEndParams) -> None:
        found = _CALLBACK.search(params.url.path)
        if found and params.response.status < 300:
            acks.acked(found.group(1))
    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_request_end)
    return trace


class ConfabClient(discord.Client):
    def __init__(self, adapter: "DiscordAdapter", guild_ready_timeout: float, identify_delay: float):
        intents = discord.Intents.default()
        intents.message_content = True      # privileged: enable it in the developer portal
        super().__init__(intents=intents, guild_ready_timeout=guild_ready_timeout,
                         allowed_mentions=discord.AllowedMentions.none(),
                         http_trace=interaction_acks(adapter.acks))
        self.adapter = adapter
        self.identify_delay = identify_delay
        self.tree = build_tree(self, adapter)
        self.ready = asyncio.Event()

    def dispatch(self, event: str, /, *args, **kwargs) -> None:
        # discord.py dispatches "interaction" as it parses INTERACTION_CREATE off the gateway,
        # before any handler runs: Discord's 3 s for the first response start here for Confab
        if event == "interaction" and args:
            self.adapter.acks.received(str(args[0].id))
        super().dispatch(event, *args, **kwargs)

    async def setup_hook(self) -> None:
        self.add_dynamic_items(CancelButton, SpeakButton, RerollButton, FeedbackButton)
        await self.adapter.sync_commands()

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        # Discord allows one IDENTIFY per 5 s per bot (max_concurrency 1): discord.py's default.
        if not initial:
            await asyncio.sleep(self.identify_delay)

    async def on_ready(self) -> None:
        log.info("Discord: connected as %s (%s) in %d servers", self.user, self.user.id, len(self.guilds))
        if not self.ready.is_set():
            if self.application_id:
                log.info("Discord: add Confab to a server with %s", invite_url(self.application_id))
            self.adapter.spawn(self.adapter.replay())
        self.ready.set()

    async def on_message(self, message: discord.Message) -> None:
        await self.adapter.on_message(message)


class DiscordAdapter:
    def __init__(self, engine: Engine, commands: Commands, *, guild_ready_timeout: float = 2.0,
                 identify_delay: float = 5.0, desk=None, escalate_every_s: float = 60.0):
        """`desk`: the support desk (bots/common/support.py) when support channels are set up;
        `escalate_every_s`: how often hand-overs are checked for escalation."""
        self.engine, self.commands = engine, commands
        self.desk, self.escalate_every_s = desk, escalate_every_s
        self.owned_desk = None           # set by bots/discord/__init__.py when it opened the desk
        self.support = None
        self.settings = engine.settings
        self.access = DiscordAccess(self.settings)
        self.acks = AckClock("Discord")         # receipt to first response: Discord's 3 s
        self.client = ConfabClient(self, guild_ready_timeout, identify_delay)
        self._task: asyncio.Task | None = None
        self._restore: Callable[[], None] | None = None
        self.pipelines: dict[str, object] = {}   # first job id -> running voice note
        self._tasks: set[asyncio.Task] = set()
        self.listening_since = time.time()      # events kept before this came from an earlier run

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self.engine.on_resume("discord", self._resume)
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

    def spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait_until_ready(self, timeout: float) -> None:
        await asyncio.wait_for(self.client.ready.wait(), timeout)

    async def stop(self) -> None:
        if self.support is not None:
            await self.support.stop()
        for task in list(self._tasks):
            task.cancel()
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

    async def sync_commands(self) -> None:
        tree = self.client.tree
        try:
            if self.settings.discord_guild_ids:
                for gid in self.settings.discord_guild_ids:
                    guild = discord.Object(id=int(gid))
                    tree.copy_global_to(guild=guild)
                    synced = await tree.sync(guild=guild)
                    log.info("Discord: %d slash commands synced to server %s", len(synced), gid)
            else:
                synced = await tree.sync()
                log.info("Discord: %d slash commands synced globally (they can take a while to "
                         "appear; set CONFAB_DISCORD_GUILD_IDS for instant ones)", len(synced))
        except discord.Forbidden:
            log.error("Discord refused the slash commands: invite the bot with the "
                      "applications.commands scope.")
        except discord.HTTPException as e:
            log.error("Discord refused the slash commands: %s", e)

    def can_speak(self) -> bool:
        return bool(self.engine.installed("tts"))

    # -- who, where ----------------------------------------------------------------------------

    def who_of(self, user: discord.abc.User, channel, guild_id: int | None) -> Who:
        roles = frozenset(str(r.id) for r in getattr(user, "roles", ()) or ())
        parent = getattr(channel, "parent_id", None) if isinstance(channel, discord.Thread) else None
        return Who(user_id=str(user.id), channel_id=str(getattr(channel, "id", "") or ""),
                   guild_id=str(guild_id) if guild_id else None, parent_id=str(parent) if parent else None,
                   role_ids=roles, is_bot=user.bot)

    def origin_of(self, who: Who, channel) -> Origin:
        return self.access.origin(who, thread=str(channel.id) if isinstance(channel, discord.Thread) else "")

    def addressed(self, message: discord.Message) -> bool:
        me = self.client.user
        if message.guild is None:
            return True
        if me in message.mentions:
            return True
        listen = set(self.settings.discord_listen_channels)
        if {str(message.channel.id), str(getattr(message.channel, "parent_id", "") or "")} & listen:
            return True
        ref = message.reference
        return bool(ref and isinstance(ref.resolved, discord.Message) and ref.resolved.author.id == me.id)

    # -- messages --------------------------------------------------------------------------------

    async def on_message(self, message: discord.Message) -> None:
        me = self.client.user
        if me is None or message.author.id == me.id or message.type not in ANSWERED_TYPES:
            return
        where = self.support.where(message.channel) if self.support is not None else None
        if where is not None:       # a support channel or one of its threads: the desk's alone
            await self._on_support_message(message, where)
            return
        if message.author.bot and not self.access.answers_bot(str(message.author.id)):
            return
        if not self.addressed(message):
            return
        who = self.who_of(message.author, message.channel, message.guild.id if message.guild else None)
        key = f"discord:message:{message.id}"
        if await self.engine.accept("discord", key, {"kind": "message", "channel": str(message.channel.id),
                                                     "message": str(message.id), "who": who.to_record()}):
            await self._answer(key, message, who)

    async def _on_support_message(self, message: discord.Message, where: tuple[str, str]) -> None:
        msg = self.support.message_of(message, where)
        if not self.support.takes(msg):             # not a question the desk answers: kept nowhere
            await self._quietly(self.support.on_message(msg))
            return
        key = f"discord:message:{message.id}"
        if await self.engine.accept("discord", key, {"kind": "support", "question": dataclasses.asdict(msg),
                                                     "guild": str(message.guild.id) if message.guild else ""}):
            await self._answer_support(key, self.support.on_message(msg))

    async def _answer_support(self, key: str, work: Awaitable[None]) -> None:
        # no reply record for the desk's jobs: after a restart it asks again from the kept question
        await self._quietly(work)
        await self.engine.settle(key)        # not when cancelled at shutdown: replayed then

    async def _answer(self, key: str, message: discord.Message, who: Who) -> None:
        reply = MessageReply(self, message)
        where = {"channel": str(message.channel.id), "reply_to": str(message.id),
                 "conversation": self.conversation_of(message)}
        with self.engine.answering(key, where) as intake:
            await self._guarded(reply, self._answer_message(message, reply, who))
        await self.engine.settle(intake)     # not when cancelled at shutdown: replayed then

    async def _answer_message(self, message: discord.Message, reply: MessageReply, who: Who) -> None:
        refusal = self.access.check(who)
        if refusal:
            await reply.say(refusal)
            return
        text = history.clean(message.content, self.client.user.id)
        request = Request(self.origin_of(who, message.channel), self.conversation_of(message), text,
                          attachments=list(message.attachments))
        reply.conversation = request.conversation
        request.history = await self.history_of(message)
        audio = [a for a in message.attachments if message.flags.voice or files.is_audio(a)]
        images = [a for a in message.attachments if files.is_image(a)]
        if audio:
            data = await files.download(audio[0], self.settings.max_audio_bytes, self.settings.discord_api_url)
            await answer_voice_note(self.commands, request, data, reply, VOICE_NOTE, pipelines=self.pipelines)
        elif images and not text.startswith("/"):
            request.attachments = [files.DiscordFile(a, self.settings.max_image_bytes, self.settings.discord_api_url)
                                   for a in images]
            await answer_about_images(self.commands, request, text, reply)
        elif text:
            await self.commands.handle(request, reply)
        elif message.attachments:
            await reply.say("📎 I can read text and voice messages here. Tell me in words what you "
                            "want to know about the file.")
        else:
            await reply.say("👋 Yes? Ask me something after the mention, or try /help.")

    def conversation_of(self, message: discord.Message) -> str:
        if isinstance(message.channel, discord.Thread):
            return f"discord:thread:{message.channel.id}"
        if message.guild is None and message.reference is None:
            return f"discord:dm:{message.channel.id}"
        return f"discord:{message.channel.id}:{message.id}"

    async def history_of(self, message: discord.Message) -> list[tuple[str, str]] | None:
        """The reply chain (or thread) as memory; None lets the store answer (a DM)."""
        limit = self.settings.history_messages
        if message.reference is not None:
            return await history.reply_chain(self.client, message, limit)
        if isinstance(message.channel, discord.Thread):
            return await history.thread_history(self.client, message, limit)
        if message.guild is None:
            return None
        return []

    # -- interactions ------------------------------------------------------------------------

    async def run_slash(self, interaction: discord.Interaction, name: str, arg: str,
                        attachment: discord.Attachment | None = None) -> None:
        who = self.who_of(interaction.user, interaction.channel, interaction.guild_id)
        refusal = self.access.check(who)
        if refusal:
            await interaction.response.send_message(refusal, ephemeral=True)
            return
        record = self._interaction_record(interaction, who, "slash", name=name, arg=arg,
                                          attachment=attachment.to_dict() if attachment is not None else None)
        key = await self._keep_then_defer(interaction, record, thinking=True, ephemeral=name in PRIVATE)
        if key is not None:
            await self._answer_slash(key, record, InteractionReply.of(self, interaction), attachment)

    @staticmethod
    def _interaction_record(interaction: discord.Interaction, who: Who, kind: str, **more) -> dict:
        """What a kept interaction needs to be answered after a restart: who, where, and its
        follow-up webhook (application id, token, and when: the token lives 15 minutes)."""
        return {"kind": kind, "who": who.to_record(),
                "thread": str(interaction.channel_id) if isinstance(interaction.channel, discord.Thread) else "",
                "channel": str(interaction.channel_id), "app": str(interaction.application_id),
                "token": interaction.token, "at": interaction.created_at.timestamp(), **more}

    async def _keep_then_defer(self, interaction: discord.Interaction, record: dict, **defer) -> str | None:
        """Keep the interaction, then defer it; its key, or None when it was kept before."""
        key = f"discord:interaction:{interaction.id}"
        kept = await self.engine.accept("discord", key, record)
        await interaction.response.defer(**defer)
        return key if kept else None

    async def _answer_slash(self, key: str, record: dict, reply: DiscordReply, attachment) -> None:
        await self._answer_interaction(key, record, reply, lambda request: self._slash(request, attachment, reply))

    async def _answer_interaction(self, key: str, record: dict, reply: DiscordReply,
                                  work: Callable[[Request], Awaitable[None]]) -> None:
        who = Who.from_record(record["who"])
        request = Request(self.access.origin(who, thread=record["thread"]),
                          f"discord:{record['channel']}:{who.user_id}",
                          f"/{record['name']} {record.get('arg', '')}".strip(), attachments=[])
        reply.conversation = request.conversation
        where = {"channel": record["channel"], "reply_to": "", "conversation": request.conversation,
                 **reply.where_extra}
        with self.engine.answering(key, where) as intake:
            await self._guarded(reply, work(request))
        await self.engine.settle(intake)

    async def open_template(self, interaction: discord.Interaction, name: str, given: dict) -> None:
        """A writing template from a slash command: a modal for the text slots the options did
        not give (as the first response: Discord allows no modal after a defer), else straight on."""
        who = self.who_of(interaction.user, interaction.channel, interaction.guild_id)
        refusal = self.access.check(who)
        if refusal:
            await interaction.response.send_message(refusal, ephemeral=True)
            return
        template = templates.get(name)
        given = {k: v for k, v in given.items() if v is not None and str(v).strip()}
        if template.missing(given):
            await interaction.response.send_modal(TemplateModal(self, template, given, str(interaction.id)))
            return
        await self.run_template(interaction, template, given)

    async def run_template(self, interaction: discord.Interaction, template, values: dict) -> None:
        """The template's command with its slots filled in, answered in follow-ups."""
        who = self.who_of(interaction.user, interaction.channel, interaction.guild_id)
        record = self._interaction_record(interaction, who, "template", name=template.name, values=values)
        key = await self._keep_then_defer(interaction, record, thinking=True)
        if key is not None:
            reply = FormReply.of(self, interaction, values)
            await self._answer_interaction(key, record, reply, lambda request: self.commands.handle(request, reply))

    async def _slash(self, request: Request, attachment: discord.Attachment | None, reply: DiscordReply) -> None:
        if attachment is not None:        # fetched here, from Discord's hosts only
            request.attachments = [await files.download(attachment, self.settings.max_audio_bytes,
                                                        self.settings.discord_api_url)]
        await self.commands.handle(request, reply)

    async def _say_aloud(self, origin: Origin, text: str, reply: DiscordReply) -> None:
        handle = await submit_speech(self.engine, text, origin, response_format="ogg", check_length=False)
        speech = await asyncio.wait_for(handle.result(), self.settings.job_timeout_s)
        await reply.send_file(speech.audio, VOICE_FILENAME, title=speech.note, voice=True,
                              duration_s=speech.duration_s, waveform=speech.waveform)

    async def cancel_clicked(self, interaction: discord.Interaction, job_id: str) -> None:
        who = self.who_of(interaction.user, interaction.channel, interaction.guild_id)
        handle = self.engine.handle(job_id)
        note = self.pipelines.get(job_id)
        if handle is None or (handle.done and note is None):
            text = "That job has already finished."
        elif handle.job.origin.user_key != f"discord:{who.user_id}" and not self.access.is_admin(who):
            text = "That job is not yours to cancel."
        else:
            await (note.cancel() if note is not None else handle.cancel())
            text = f"🛑 Cancelled {job_id}."
        await interaction.followup.send(text, ephemeral=True)

    async def reroll_clicked(self, interaction: discord.Interaction, job_id: str) -> None:
        """The same picture request as job `job_id` (from its stored record), with a new seed,
        drawn by and for the person who clicked, in a message of its own. The click is kept
        before its defer, as a slash command is."""
        who = self.who_of(interaction.user, interaction.channel, interaction.guild_id)
        refusal = self.access.check(who)
        if refusal:
            await interaction.response.send_message(refusal, ephemeral=True)
            return
        record = self._interaction_record(interaction, who, "reroll", name="reroll", job=job_id)
        key = await self._keep_then_defer(interaction, record, thinking=True)    # the picture's own message
        if key is not None:
            reply = InteractionReply.of(self, interaction)
            await self._answer_interaction(key, record, reply, lambda request: self._reroll(request, reply, job_id))

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
        reply = DiscordReply(self, interaction.channel_id, reply_to=message.id if message else None)

        async def whisper(text: str) -> None:
            await interaction.followup.send(text, ephemeral=True)
        reply._post = lambda text, view=None: whisper(text)      # words go only to the clicker
        who = self.who_of(interaction.user, interaction.channel, interaction.guild_id)
        refusal = self.access.check(who)
        if refusal:
            await whisper(refusal)
            return
        text = history.clean(message.content if message else "", self.client.user.id)
        if text.startswith("🎙️"):
            text = text.split("\n\n", 1)[-1]           # not the transcript, only the answer
        await self._guarded(reply, self._say_aloud(self.origin_of(who, interaction.channel), text, reply))

    # -- after a restart ----------------------------------------------------------------------

    async def replay(self) -> int:
        """Answer the messages and slash commands kept before a restart that no job had taken up
        yet; returns how many."""
        events = await self.engine.open_events("discord", before=self.listening_since)
        for key, record in events:
            self.spawn(self._replay(key, record))
        log.info("Discord: answering %d requests received before the restart", len(events))
        return len(events)

    async def _replay(self, key: str, record: dict) -> None:
        try:
            kind = record.get("kind")
            if kind in ("slash", "reroll", "template"):
                reply = self._reply_to_interaction(record["channel"], record.get("app", ""),
                                                   record.get("token", ""), float(record.get("at") or 0))
            if kind == "slash":
                attachment = files.KeptAttachment.of(record["attachment"]) if record.get("attachment") else None
                await self._answer_slash(key, record, reply, attachment)
            elif kind == "reroll":
                await self._answer_interaction(key, record, reply,
                                               lambda request: self._reroll(request, reply, record["job"]))
            elif kind == "template":
                if not isinstance(reply, InteractionReply):   # the form's values go only with its token
                    log.info("not answering %s after the restart: its interaction's token expired", key)
                    await self.engine.settle(key)
                    return
                form = FormReply(self, reply.channel_id, reply.followup, float(record["at"]), record["values"])
                await self._answer_interaction(key, record, form, lambda request: self.commands.handle(request, form))
            elif kind == "support":
                msg = SupportMessage.of(record["question"])
                if self.support is None or not self.support.takes(msg):     # no longer a support channel
                    await self.engine.settle(key)
                    return
                await self._answer_support(key, self.support.answer_again(msg, record.get("guild", "")))
            elif kind == "message":
                channel_id = int(record["channel"])
                channel = self.client.get_channel(channel_id) or await self.client.fetch_channel(channel_id)
                message = await channel.fetch_message(int(record["message"]))
                await self._answer(key, message, Who.from_record(record["who"]))
            else:
                await self.engine.settle(key)
        except (discord.NotFound, discord.Forbidden) as e:    # deleted, or no longer ours to read
            log.info("not answering %s after the restart: %s", key, e)
            await self.engine.settle(key)
        except discord.HTTPException as e:
            log.warning("could not answer %s after the restart yet: %s", key, e)

    def _reply_to_interaction(self, channel: str, app: str, token: str, at: float) -> DiscordReply:
        """Follow-ups of an interaction while its token lives; after that, the channel."""
        if token and time.time() - at < INTERACTION_TOKEN_S:
            return InteractionReply(self, int(channel), followup_webhook(self.client, app, token), at)
        return ChannelReply(self, int(channel))

    async def _resume(self, handle, ref: dict) -> None:
        """A job accepted before a restart runs again: its answer goes where it would have,
        into the message posted for it then (never a second answer)."""
        delivery = Delivery.resumed(self.engine.store, handle.id, ref.get("reply_ref"))
        where = delivery.where
        kind = handle.job.kind
        if not where.get("channel") and not handle.done:
            # its answer goes nowhere (a support desk's job: the desk asks again from its kept
            # question); running it would only keep the model busy
            await handle.cancel()
        if not where.get("channel") or kind not in ("chat", "vision", "transcribe", "speak", "ocr", "image"):
            return
        channel = int(where["channel"])
        interaction = where.get("interaction")
        if isinstance(interaction, dict):
            reply = self._reply_to_interaction(where["channel"], interaction.get("app", ""),
                                               interaction.get("token", ""), float(interaction.get("at") or 0))
        else:
            reply = ChannelReply(self, channel, int(where["reply_to"]) if where.get("reply_to") else None)
        reply.conversation = where.get("conversation", "")
        if kind in ("transcribe", "speak", "ocr"):
            # a voice note's or an image question's first stage: what chained the stages is gone
            await handle.cancel()
            await self._say_error(reply, RESTARTED_MID_WAY)
            return

        async def earlier() -> list:
            if isinstance(reply, InteractionReply):    # follow-ups are edited through the webhook
                return [await reply.followup.fetch_message(int(m)) for m in delivery.messages]
            partial = self.client.get_partial_messageable(channel)
            return [partial.get_partial_message(int(m)) for m in delivery.messages]

        async def run() -> None:
            reply.earlier = await earlier()
            if kind == "image":
                result = await handle.result()
                await deliver(reply, await reply.say(f"🎨 “{result.prompt}” ({handle.id})"), result)
                return
            await reply.stream(tokens_of(handle), status=f"queued ({handle.id})")
            result = await handle.result()
            if reply.conversation and handle.job.messages:
                await self.engine.remember_exchange(reply.conversation, handle.job.messages[-1].content,
                                                    result.text)

        await self._guarded(reply, run())

    # -- errors -------------------------------------------------------------------------------

    async def _guarded(self, reply: DiscordReply, work: Awaitable[None]) -> None:
        """Run `work`; any failure becomes a short reply, and never kills the adapter."""
        try:
            await work
        except ConfabError as e:
            await self._say_error(reply, explain(e))
        except asyncio.TimeoutError:
            await self._say_error(reply, "⌛ That took too long and was stopped. Please try again.")
        except discord.HTTPException as e:
            log.warning("Discord refused a reply: %s", e)
            await self._say_error(reply, "💥 Discord refused my answer. An admin can check the logs.")
        except Exception as e:
            log.exception("answering on Discord failed")
            await self._say_error(reply, explain(e))

    @staticmethod
    async def _quietly(work: Awaitable[None]) -> None:
        """Support-channel work: a failure goes to the log only (the desk never speaks unasked)."""
        try:
            await work
        except Exception:
            log.exception("support channel on Discord")

    async def _say_error(self, reply: DiscordReply, text: str) -> None:
        try:
            await reply.say(text)
        except Exception:
            log.exception("could not even say that something went wrong")
