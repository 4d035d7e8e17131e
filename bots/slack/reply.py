"""Answering in Slack: the `Reply` protocol on the Web API.

`ThreadReply` answers in a thread (or at the top of a DM): a placeholder that shows the job's
place in the queue, then throttled `chat.update` edits as tokens arrive, split at Slack's
limits, with a Cancel button while the job runs. `SlashReply` answers a slash command: private
words through its response_url (ephemeral), and visible ones in a thread it starts under the
question, or through the response_url when Confab is not in the channel.
"""
from __future__ import annotations

import asyncio
import logging
import re
from typing import Any, AsyncIterator, Awaitable, Callable

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.common.delivery import Delivery, Where
from bots.common.render import ThrottledStream
from bots.slack.mrkdwn import to_mrkdwn

log = logging.getLogger(__name__)

# Slack truncates a message's text after 40,000 characters and a section block holds 3,000; the
# answer streams into a section (beside the Cancel button), so pieces stay under that, escapes
# included.
PIECE_LIMIT = 2800
SECTION_LIMIT = 3000
STATUS_EVERY_S = 2.0
CANCEL_ACTION = "confab_cancel"
REROLL_ACTION = "confab_reroll"
ANSWER_EVENT = "confab_answer"     # message metadata naming the job an answer belongs to
_JOB_ID = re.compile(r"\bjob_[0-9a-f]+\b")


def cancel_blocks(text: str, job_id: str) -> list[dict]:
    return [
        {"type": "section", "block_id": "answer",
         "text": {"type": "mrkdwn", "text": text[:SECTION_LIMIT] or " "}},
        {"type": "actions", "block_id": "job",
         "elements": [{"type": "button", "action_id": CANCEL_ACTION, "value": job_id,
                       "text": {"type": "plain_text", "text": "Cancel"}}]},
    ]


def image_blocks(text: str, job_id: str, payload: str, done: bool) -> list[dict]:
    """An /imagine status message: its text, with Cancel while the job runs, Re-roll after."""
    button = ({"type": "button", "action_id": REROLL_ACTION, "value": payload,
               "text": {"type": "plain_text", "text": "Re-roll"}} if done else
              {"type": "button", "action_id": CANCEL_ACTION, "value": job_id,
               "text": {"type": "plain_text", "text": "Cancel"}})
    return [{"type": "section", "block_id": "image",
             "text": {"type": "mrkdwn", "text": text[:SECTION_LIMIT] or " "}},
            {"type": "actions", "block_id": "job", "elements": [button]}]


class ThreadReply:
    """Answers in one place of one channel: a thread (thread_ts) or the top of a DM (None)."""

    def __init__(self, client: AsyncWebClient, engine, channel: str, thread_ts: str | None,
                 user: str, interval: float = 1.0, *, conversation: str = "",
                 pipelines: dict[str, Any] | None = None):
        self.client, self.engine = client, engine
        self.channel, self.thread_ts, self.user = channel, thread_ts, user
        self.interval = interval
        self.conversation = conversation      # the store's key of the thread's memory
        # the messages this job's answer was posted in before a restart: edited, not re-posted
        self.earlier: list[str] = []
        self.delivery: Delivery | None = None
        # first stage's job id -> running voice note: its message keeps its Cancel button while
        # any stage runs
        self.pipelines = pipelines if pipelines is not None else {}
        self._controls: dict[str, tuple[str, str, bool]] = {}   # ts -> (job id, payload, done)
        self._texts: dict[str, str] = {}                        # ts -> text shown, for controls

    # -- the Reply protocol ------------------------------------------------------------------

    async def say(self, text: str) -> object:
        r = await self.client.chat_postMessage(channel=self.channel, thread_ts=self.thread_ts,
                                               text=to_mrkdwn(text), unfurl_links=False)
        self._texts[r["ts"]] = to_mrkdwn(text)
        return r["ts"]

    async def update(self, ref: object, text: str) -> None:
        text = to_mrkdwn(text)
        controls = self._controls.get(str(ref))
        if controls is None:
            await self.client.chat_update(channel=self.channel, ts=str(ref), text=text)
            return
        self._texts[str(ref)] = text
        job_id, _, done = controls
        if not done and not self._active(job_id):    # failed or cancelled: no button left
            del self._controls[str(ref)]
            await self.client.chat_update(channel=self.channel, ts=str(ref), text=text, blocks=[])
            return
        await self.client.chat_update(channel=self.channel, ts=str(ref), text=text,
                                      blocks=image_blocks(text, *controls))

    async def image_controls(self, ref: object, job_id: str, spec, done: bool) -> None:
        """Buttons on an /imagine status message: Cancel while queued or drawing, Re-roll after."""
        if ref is None:
            return
        self._controls[str(ref)] = (job_id, spec.payload(), done)
        text = self._texts.get(str(ref)) or f"🎨 “{spec.prompt}” ({job_id})"
        await self.update(ref, text)

    async def private(self, text: str) -> object:
        try:
            r = await self.client.chat_postEphemeral(channel=self.channel, user=self.user,
                                                     thread_ts=self.thread_ts, text=to_mrkdwn(text))
            return r.get("message_ts")
        except SlackApiError as e:   # e.g. the person left the channel: say it openly instead
            log.info("ephemeral to %s in %s failed (%s); posting in the thread", self.user,
                     self.channel, e.response.get("error"))
            return await self.say(text)

    async def send_file(self, data: bytes, filename: str, title: str = "", voice: bool = False,
                        duration_s: float = 0.0, waveform: bytes = b"") -> object:
        r = await self.client.files_upload_v2(channel=self.channel, thread_ts=self.thread_ts,
                                              content=data, filename=filename, title=title or filename)
        return (r.get("file") or {}).get("id")

    async def stream(self, chunks: AsyncIterator[str], status: str = "") -> str:
        job_id = (_JOB_ID.search(status or "") or [None])[0]
        if job_id:
            await self._remember_where(job_id)
        throttled = ThrottledStream(lambda body: self._post_piece(body, job_id),
                                    lambda ref, body: self._edit_piece(ref, body, job_id),
                                    PIECE_LIMIT, interval=self.interval,
                                    placeholder=self.status_text(job_id))
        if self.earlier:
            throttled.refs, throttled.shown = list(self.earlier), [None] * len(self.earlier)
        text = await throttled.run(self._with_status(chunks, throttled, job_id))
        if self.delivery is not None and self.delivery.job_id == job_id:
            await self.delivery.delivered()
        return text

    # -- streaming pieces ----------------------------------------------------------------------

    def _active(self, job_id: str | None) -> bool:
        note = self.pipelines.get(job_id) if job_id else None
        if note is not None:
            return not note.done
        handle = self.engine.handle(job_id) if job_id else None
        return handle is not None and not handle.done

    async def _post_piece(self, body: str, job_id: str | None) -> str:
        text = to_mrkdwn(body)
        extra: dict[str, Any] = {}
        if self._active(job_id):
            extra["blocks"] = cancel_blocks(text, job_id)
        if job_id:   # so that a restart finds it even if the kill lands before it is recorded
            extra["metadata"] = {"event_type": ANSWER_EVENT, "event_payload": {"job_id": job_id}}
        r = await self.client.chat_postMessage(channel=self.channel, thread_ts=self.thread_ts,
                                               text=text, unfurl_links=False, **extra)
        if self.delivery is not None and self.delivery.job_id == job_id:
            await self.delivery.posted(r["ts"])
        return r["ts"]

    async def _edit_piece(self, ref: object, body: str, job_id: str | None) -> None:
        text = to_mrkdwn(body)
        blocks = cancel_blocks(text, job_id) if self._active(job_id) else []
        await self.client.chat_update(channel=self.channel, ts=str(ref), text=text, blocks=blocks)

    def status_text(self, job_id: str | None) -> str:
        where = self.engine.position(job_id) if job_id else None
        if where:
            return f"⏳ queued, #{where[0]} in line (about {where[1]:.0f} s)"
        return "✍️ Thinking…"

    async def _with_status(self, chunks: AsyncIterator[str], throttled: ThrottledStream,
                           job_id: str | None) -> AsyncIterator[str]:
        """The chunks, unchanged; until the first one arrives, keep the placeholder's queue
        position current (one edit at most every STATUS_EVERY_S, and only when it changes)."""
        it = chunks.__aiter__()
        first = asyncio.ensure_future(it.__anext__())
        try:
            while not first.done():
                await asyncio.wait({first}, timeout=STATUS_EVERY_S)
                if first.done() or not throttled.refs:
                    break
                text = self.status_text(job_id)
                if throttled.shown[0] != text:
                    await self._edit_piece(throttled.refs[0], text, job_id)
                    throttled.shown[0] = text
            chunk = await first
        except StopAsyncIteration:
            return
        finally:
            if not first.done():
                first.cancel()
        yield chunk
        async for chunk in it:
            yield chunk

    async def find_posted(self, job_id: str) -> list[str]:
        """The messages posted for a job before a restart, found by their metadata (for a kill
        that landed between a post and its record)."""
        try:
            if self.thread_ts:
                r = await self.client.conversations_replies(channel=self.channel, ts=self.thread_ts,
                                                            include_all_metadata=True, limit=200)
            else:
                r = await self.client.conversations_history(channel=self.channel,
                                                            include_all_metadata=True, limit=50)
        except SlackApiError as e:
            log.info("could not look for %s's earlier messages: %s", job_id, e.response.get("error"))
            return []
        mine = [m for m in r.get("messages") or []
                if ((m.get("metadata") or {}).get("event_payload") or {}).get("job_id") == job_id]
        return [m["ts"] for m in sorted(mine, key=lambda m: float(m["ts"]))]

    def where(self) -> Where:
        return Where(self.channel, self.conversation, self.thread_ts, self.user)

    async def _remember_where(self, job_id: str) -> None:
        """Write where the answer goes next to the job, so that after a restart it still arrives."""
        self.delivery = Delivery(self.engine.store, job_id, self.where(), list(self.earlier))
        await self.delivery.save()


class SlashReply(ThreadReply):
    """A slash command's answers. Private ones are ephemeral through the response_url; visible
    ones go into a thread under a message that shows the question, started on first use."""

    def __init__(self, client: AsyncWebClient, engine, channel: str, user: str, question: str,
                 respond: Callable[..., Awaitable[Any]], on_thread: Callable[[str], None],
                 interval: float = 1.0):
        super().__init__(client, engine, channel, None, user, interval)
        self.respond, self.question, self.on_thread = respond, question, on_thread
        self.in_channel: bool | None = None     # None: not tried yet

    async def _thread(self) -> bool:
        """Start the thread under the question; False when Confab cannot post here."""
        if self.in_channel is None:
            try:
                r = await self.client.chat_postMessage(
                    channel=self.channel, text=f"<@{self.user}> asked: {to_mrkdwn(self.question)}",
                    unfurl_links=False)
                self.thread_ts = r["ts"]
                self.in_channel = True
                self.on_thread(r["ts"])
            except SlackApiError as e:
                if e.response.get("error") not in ("not_in_channel", "channel_not_found",
                                                   "is_archived", "restricted_action"):
                    raise
                self.in_channel = False
        return self.in_channel

    async def say(self, text: str) -> object:
        if await self._thread():
            return await super().say(text)
        await self.respond(text=to_mrkdwn(text), response_type="in_channel")
        return None

    async def private(self, text: str) -> object:
        await self.respond(text=to_mrkdwn(text), response_type="ephemeral")
        return None

    async def update(self, ref: object, text: str) -> None:
        if ref is None:
            await self.respond(text=to_mrkdwn(text), response_type="in_channel")
        else:
            await super().update(ref, text)

    async def send_file(self, data: bytes, filename: str, title: str = "", voice: bool = False,
                        duration_s: float = 0.0, waveform: bytes = b"") -> object:
        if await self._thread():
            return await super().send_file(data, filename, title, voice, duration_s, waveform)
        await self.respond(text=f"I made {filename}, but I can only share files in channels I'm in. "
                                "Invite me with /invite @Confab.", response_type="ephemeral")
        return None

    async def stream(self, chunks: AsyncIterator[str], status: str = "") -> str:
        if await self._thread():
            return await super().stream(chunks, status)
        # Not in the channel: no message to edit, so answer once, when done (response_url
        # allows five posts).
        text = "".join([c async for c in chunks])
        await self.respond(text=to_mrkdwn(text or "(no answer)"), response_type="in_channel")
        return text
