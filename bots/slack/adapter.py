"""The Slack adapter: bolt listeners that acknowledge at once and hand the work to a task.

Every event, command and action is acknowledged before any work starts (Slack wants an ack
within 3 s, and a model may take longer than that just to load); then a question becomes a
`Request` for the shared command set, answered through a `ThreadReply` or `SlashReply`.
A question or a command is kept in the store before its ack, as its typed record (events.py),
through the intake every door shares (bots/common/intake.py): a listener middleware for events,
which bolt runs before its automatic ack, and the command listener before it calls ack(), a
Re-roll click likewise. After a restart, `replay` answers those that no job had taken up yet. A support channel's question is kept the same way, open until the desk has done
with it (its answer is several jobs and a decision); the desk answers it again after a restart,
unless its thread shows an answer already.
"""
from __future__ import annotations

import logging
import re
import time

from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.common.access import Access, Lists, RateLimit
from bots.common.acks import AckClock
from bots.common.commands import Commands, Request
from bots.common.delivery import Delivery, Where
from bots.common.image_commands import answer_about_images, reroll
from bots.common.intake import Cancelled, Intake, kept_of
from bots.common.speech import VoiceNoteWords, answer_voice_note
from bots.slack.events import (
    KEPT,
    KeptCommand,
    KeptMessage,
    KeptReroll,
    KeptSupport,
    Said,
    Seen,
    command_name,
    said,
)
from bots.slack.files import (
    MAX_TEXT_FILE_BYTES,
    SharedFile,
    SlackAttachment,
    SlackFiles,
)
from bots.slack.reply import CANCEL_ACTION, REROLL_ACTION, SlashReply, ThreadReply
from bots.slack.settings import SlackSettings
from bots.slack.support import SlackSupport, support_message
from engine import ConfabError, Origin
from engine.messages import explain

log = logging.getLogger(__name__)

ADMIN_CACHE_S = 600.0
ADMIN_CACHE_SIZE = 5000
SLASH_COMMANDS = ("ask", "speak", "transcribe", "translate", "imagine", "queue", "cancel",
                  "models", "help", "reset")
# A clip's container (webm from the desktop, m4a from phones) is never relied on: ffmpeg probes
# the bytes. The answer aloud is mp3, which Slack plays inline on every client.
VOICE_NOTE = VoiceNoteWords(heard="🎧 “{}”\n\n", format="mp3", filename="answer.mp3",
                            title="The answer, spoken", stopped_inline=True)
CANCEL_REFUSED = {Cancelled.FINISHED: "That job has already finished.",
                  Cancelled.NOT_YOURS: "Only the person who asked (or an admin) can cancel that."}


class SlackAdapter:
    def __init__(self, engine, commands: Commands, client: AsyncWebClient, identity: dict,
                 settings: SlackSettings, desk=None):
        """`settings`: Slack's own (the engine's are `engine.settings`); `desk`: the support desk
        (bots/common/support.py) when support channels are set up."""
        self.engine, self.commands, self.client, self.settings = engine, commands, client, settings
        self.team = identity.get("team_id", "")
        self.bot_user_id = identity.get("user_id", "")
        self.bot_id = identity.get("bot_id", "")
        self.files = SlackFiles(settings.slack_bot_token, settings.slack_api_url)
        self.access = Access(Lists.of(settings.slack_allow_channels, settings.slack_deny_channels,
                                      settings.slack_allow_users, settings.slack_deny_users),
                             RateLimit(settings.slack_user_rate))
        self.seen = Seen()
        self.acks = AckClock("Slack")           # receipt to ack, as Slack counts its 3 s
        self._admins: dict[str, tuple[bool, float]] = {}
        self.intake = Intake(engine, "slack", self)
        self._tasks = self.intake.tasks            # the work after acks, that stop() waits for
        self.pipelines = self.intake.pipelines     # first stage's job id -> running voice note
        self.support = None
        if desk is not None:
            self.support = SlackSupport(desk, client)
        self.app = self._build_app()
        engine.on_resume("slack", self.intake.resume)

    # -- the bolt app ------------------------------------------------------------------------

    def _build_app(self) -> AsyncApp:
        s = self.settings
        app = AsyncApp(client=self.client, signing_secret=s.slack_signing_secret or "",
                       request_verification_enabled=not s.slack_app_token,
                       process_before_response=False, logger=logging.getLogger("slack_bolt"))
        app.event("app_mention", middleware=[self._keep_question])(self._on_message)
        app.event("message", middleware=[self._keep_question])(self._on_message)
        app.event(re.compile(r".*"))(self._on_other_event)
        app.command(re.compile(r"^/.+"))(self._on_command)
        app.action(CANCEL_ACTION)(self._on_cancel)
        app.action(REROLL_ACTION)(self._on_reroll)
        app.action(re.compile(r"^confab_(not_)?helpful$"))(self._on_feedback)
        app.action(re.compile(r".*"))(self._on_other_action)
        app.view(re.compile(r".*"))(self._on_other_action)
        app.shortcut(re.compile(r".*"))(self._on_other_action)
        app.error(self._on_bolt_error)
        return app

    async def stop(self, grace_s: float = 5.0) -> None:
        if self.support is not None:
            await self.support.stop()
        await self.intake.stop(grace_s)
        await self.files.close()

    # -- listeners: each returns at once ------------------------------------------------------

    def _in_support(self, event: dict) -> bool:
        return self.support is not None and self.support.is_support_channel(event.get("channel", ""))

    def _question(self, event: dict, team: str) -> Said | None:
        if self._in_support(event):
            return None
        return said(event, team, self.bot_user_id, self.bot_id, self.settings.slack_answer_bots)

    def _support_message(self, event: dict):
        return support_message(event, self.bot_user_id, self.bot_id)

    async def _keep_question(self, body: dict, context, next) -> None:
        """Before bolt acknowledges a message event: keep a question (a support desk's too) in
        the store, once (a mention's twin message event and Slack's redeliveries find it kept)."""
        event = body.get("event") or {}
        team = body.get("team_id", self.team)
        if self._in_support(event):
            msg = self._support_message(event)
            kept = (f"slack:{msg.channel}:{msg.id}", KeptSupport(event)) \
                if msg is not None and self.support.takes(msg) else None
        else:
            q = self._question(event, team)
            kept = (f"slack:{q.channel}:{q.ts}", KeptMessage(event, team)) if q is not None else None
        if kept is not None and await self.intake.keep(*kept):
            context["confab_event"] = kept[0]
        await next()

    async def _on_message(self, event: dict, body: dict, context) -> None:
        key = context.get("confab_event")
        if self._in_support(event):
            self._on_support_message(event, key)
            return
        question = self._question(event, body.get("team_id", self.team))
        if key is None or question is None:
            return
        self.intake.spawn(self._answer(question, key))

    def _on_support_message(self, event: dict, key: str | None) -> None:
        """A support channel: every message goes to the desk (its app_mention twin is skipped);
        a question it may answer was kept (`key`; None: kept before, by its twin or a redelivery)."""
        msg = self._support_message(event)
        if msg is None or msg.is_bot:
            return
        if self.support.takes(msg):
            if key is not None:
                self.intake.spawn(self.intake.answer_quietly(key, self.support.on_message(msg)))
            return
        if self.seen.first(f"{msg.channel}:{msg.id}"):
            self.intake.spawn(self.intake.quietly(self.support.on_message(msg)))

    async def _on_feedback(self, ack, body: dict, respond) -> None:
        await ack()
        if self.support is not None:
            self.intake.spawn(self.intake.quietly(self.support.on_feedback(body, respond)))

    async def _on_other_event(self, event: dict) -> None:
        log.debug("ignoring a %s event", event.get("type"))

    async def _on_command(self, ack, command: dict, respond) -> None:
        key = f"slack:cmd:{command.get('trigger_id') or command.get('channel_id', '')}"
        if await self.intake.keep_then_ack(key, KeptCommand(command), ack):
            self.intake.spawn(self._command(command, respond, key))

    async def _on_cancel(self, ack, body: dict, respond) -> None:
        await ack()
        self.intake.spawn(self._cancel(body, respond))

    async def _on_reroll(self, ack, body: dict, respond) -> None:
        key = f"slack:action:{body.get('trigger_id') or (body.get('actions') or [{}])[0].get('action_ts', '')}"
        if await self.intake.keep_then_ack(key, KeptReroll(body), ack):
            self.intake.spawn(self._reroll(body, respond, key))

    async def _on_other_action(self, ack, body: dict) -> None:
        await ack()
        log.debug("ignoring a %s payload", body.get("type"))

    async def _on_bolt_error(self, error: Exception, body: dict) -> None:
        log.error("Slack listener failed on a %s payload: %s", body.get("type"), error, exc_info=error)

    # -- the work -------------------------------------------------------------------------------

    async def is_admin(self, user: str) -> bool:
        """Configured admins (CONFAB_ADMINS slack:U…) and the workspace's admins and owners."""
        admins = self.engine.settings.admins
        if f"slack:{user}" in admins or user in admins:
            return True
        cached = self._admins.get(user)
        if cached and time.monotonic() - cached[1] < ADMIN_CACHE_S:
            return cached[0]
        admin = False
        try:
            info = (await self.client.users_info(user=user)).get("user") or {}
            admin = bool(info.get("is_admin") or info.get("is_owner") or info.get("is_primary_owner"))
        except SlackApiError as e:   # no users:read scope, or a bot: not an admin
            log.debug("users.info %s: %s", user, e.response.get("error"))
        if len(self._admins) >= ADMIN_CACHE_SIZE:
            self._admins.pop(next(iter(self._admins)))
        self._admins[user] = (admin, time.monotonic())
        return admin

    def _reply(self, q: Said) -> ThreadReply:
        return ThreadReply(self.client, self.engine, q.channel, q.thread_ts, q.user,
                           self.settings.slack_edit_interval_s, conversation=q.conversation,
                           pipelines=self.pipelines)

    async def _answer(self, q: Said, event_id: str) -> None:
        reply = self._reply(q)
        await self.intake.answer(event_id, reply, self._answer_unguarded(q, reply))

    async def _answer_unguarded(self, q: Said, reply: ThreadReply) -> None:
        admin = await self.is_admin(q.user)
        refusal = self.access.check(q.user, q.channel, admin)
        if refusal:
            await reply.private(refusal)
            return
        origin = Origin(platform="slack", user=q.user, channel=q.channel, thread=q.thread_ts or "",
                        is_dm=q.is_dm, is_admin=admin)
        request = Request(origin, q.conversation, q.text)
        files = [SharedFile.of(f) for f in q.files]
        clips = [f for f in files if f.kind == "audio"]
        if clips:
            data = await self.files.download(clips[0], self.engine.settings.max_audio_bytes)
            await answer_voice_note(self.commands, request, data, reply, VOICE_NOTE, asked=request.text,
                                    pipelines=self.pipelines)
            return
        images = [f for f in files if f.kind == "image"]
        notes, request.text = await self._read_files(files, q.text, bool(images))
        for note in notes:
            await reply.private(note)
        if images:
            request.attachments = [SlackAttachment(self.files, f, self.engine.settings.max_image_bytes)
                                   for f in images]
            await answer_about_images(self.commands, request, request.text, reply)
            return
        if not request.text:
            if not notes:   # an empty mention: say how to ask rather than nothing
                await reply.private("👋 Ask me something after the mention, or try /help.")
            return
        await self.commands.handle(request, reply)

    async def _read_files(self, files: list[SharedFile], text: str,
                          images: bool = False) -> tuple[list[str], str]:
        """Text files become part of the question; images are the caller's (`images`: it can
        look at them); other files get a word, never silence."""
        notes = []
        for f in files:
            if f.kind == "text" and f.size <= MAX_TEXT_FILE_BYTES:
                try:
                    data = await self.files.download(f, MAX_TEXT_FILE_BYTES)
                    body = data.decode("utf-8", "replace")
                    text = f"{text}\n\nThe file {f.name}:\n```\n{body}\n```".strip()
                    continue
                except ConfabError as e:
                    notes.append(explain(e))
                    continue
            if f.kind == "image" and images:
                continue
            if f.kind == "image":
                notes.append(f"🖼️ I can't look at images here yet, so I skipped {f.name}."
                             + ("" if text else " Tell me what you'd like to know in words."))
            else:
                notes.append(f"📎 I can read text files and voice clips; {f.name} is neither, so I "
                             "skipped it.")
        return notes, text

    async def _command(self, command: dict, respond, event_id: str) -> None:
        name = command_name(command.get("command", ""))
        user, channel = command.get("user_id", ""), command.get("channel_id", "")
        text = (command.get("text") or "").strip()
        is_dm = channel.startswith("D") or command.get("channel_name") == "directmessage"
        request = Request(Origin(platform="slack", user=user, channel=channel, is_dm=is_dm),
                          f"slack:{self.team}:{channel}:cmd:{command.get('trigger_id', '')}",
                          f"/{name} {text}".strip())

        def on_thread(ts: str) -> None:
            request.conversation = f"slack:{self.team}:{channel}:{ts}"
            reply.conversation = request.conversation
            request.origin = Origin(platform="slack", user=user, channel=channel, thread=ts,
                                    is_dm=is_dm, is_admin=request.origin.is_admin)

        reply = SlashReply(self.client, self.engine, channel, user, f"/{name} {text}".strip(), respond,
                           on_thread, self.settings.slack_edit_interval_s)
        reply.conversation = request.conversation
        await self.intake.answer(event_id, reply, self._command_unguarded(request, reply))

    async def _command_unguarded(self, request: Request, reply: SlashReply) -> None:
        origin = request.origin
        admin = await self.is_admin(origin.user)
        refusal = self.access.check(origin.user, origin.channel, admin)
        if refusal:
            await reply.private(refusal)
            return
        request.origin = Origin(platform="slack", user=origin.user, channel=origin.channel,
                                is_dm=origin.is_dm, is_admin=admin)
        await self.commands.handle(request, reply)

    async def _cancel(self, body: dict, respond) -> None:
        user = (body.get("user") or {}).get("id", "")
        job_id = (body.get("actions") or [{}])[0].get("value", "")
        try:
            outcome = await self.intake.cancel(job_id, f"slack:{user}", lambda: self.is_admin(user))
            if outcome in CANCEL_REFUSED:
                await respond(text=CANCEL_REFUSED[outcome], response_type="ephemeral", replace_original=False)
        except Exception:
            log.exception("cancelling %s from a button failed", job_id)

    async def _reroll(self, body: dict, respond, event_id: str) -> None:
        """Re-roll: the same picture with a new seed, drawn into the thread of the one clicked."""
        user = (body.get("user") or {}).get("id", "")
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id", "")
        message = body.get("message") or {}
        thread_ts = message.get("thread_ts") or message.get("ts") or (body.get("container") or {}).get("message_ts")
        payload = (body.get("actions") or [{}])[0].get("value", "")
        reply = ThreadReply(self.client, self.engine, channel, thread_ts, user,
                            self.settings.slack_edit_interval_s)

        async def run() -> None:
            admin = await self.is_admin(user)
            refusal = self.access.check(user, channel, admin)
            if refusal:
                await respond(text=refusal, response_type="ephemeral", replace_original=False)
                return
            origin = Origin(platform="slack", user=user, channel=channel, thread=thread_ts or "",
                            is_dm=channel.startswith("D"), is_admin=admin)
            request = Request(origin, f"slack:{self.team}:{channel}:{thread_ts or 'dm'}")
            await reroll(self.commands, request, reply, payload)

        await self.intake.answer(event_id, reply, run())

    def refused(self, error: Exception) -> str | None:
        """Slack's own failures in words (the intake's guard asks)."""
        if isinstance(error, SlackApiError):
            log.warning("Slack refused a call: %s", error.response.get("error"))
            return explain(error)
        return None

    # -- after a restart ------------------------------------------------------------------------

    async def replay(self) -> int:
        """Answer the questions and commands acknowledged before a restart that no job had taken
        up yet (Slack never sends an acknowledged event again); returns how many."""
        return await self.intake.replay(self._answer_again)

    async def _answer_again(self, key: str, record: dict) -> None:
        kept = kept_of(record, KEPT)
        if isinstance(kept, KeptSupport):
            msg = self._support_message(kept.event) if self.support is not None else None
            if msg is None or not self.support.takes(msg):     # no longer a support channel
                await self.engine.settle(key)
                return
            await self.intake.answer_quietly(key, self.support.answer_again(msg, self.bot_user_id, self.bot_id))
        elif isinstance(kept, KeptCommand):
            await self._command(kept.command, AsyncRespond(response_url=kept.command.get("response_url")), key)
        elif isinstance(kept, KeptReroll):
            await self._reroll(kept.body, AsyncRespond(response_url=kept.body.get("response_url")), key)
        else:
            q = self._question(kept.event, kept.team or self.team) if isinstance(kept, KeptMessage) else None
            if q is None:
                await self.engine.settle(key)
                return
            await self._answer(q, key)

    def reply_for(self, where: Where) -> ThreadReply:
        """Where a job accepted before a restart answers (the intake's resume asks)."""
        return ThreadReply(self.client, self.engine, where.channel, where.thread_ts, where.user,
                           self.settings.slack_edit_interval_s, conversation=where.conversation)

    async def earlier(self, reply: ThreadReply, delivery: Delivery) -> list[str]:
        return delivery.messages or await reply.find_posted(delivery.job_id)
