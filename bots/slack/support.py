"""Support channels on Slack: the shared `SupportDesk` (bots/common/support.py) on Slack's terms.

Every human message in a support channel goes to the desk; a new top-level question may get a
threaded answer with citations and Helpful / Not helpful buttons, or a hand-over; a person of
the support group replying in a thread makes Confab stand down there. A press of "Not helpful"
and a hand-over left unanswered ping the group in the thread.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.common.support import DoorDesk, SupportAction, SupportDesk, SupportMessage
from bots.slack.events import SPOKEN_SUBTYPES, is_from_bot, strip_mention
from bots.slack.mrkdwn import to_mrkdwn
from bots.slack.reply import SECTION_LIMIT

log = logging.getLogger(__name__)

HELPFUL_ACTION = "confab_helpful"
GONE = ("thread_not_found", "message_not_found", "channel_not_found", "not_in_channel")
THREAD_LOOK = 200          # replies read before answering a question kept over a restart
NOT_HELPFUL_ACTION = "confab_not_helpful"
USERGROUP_TTL_S = 300.0    # how long a support user group's member list is trusted


def feedback_blocks(text: str, outcome_id: int | None) -> list[dict]:
    value = json.dumps({"outcome": outcome_id})
    return [{"type": "section", "block_id": "answer",
             "text": {"type": "mrkdwn", "text": text[:SECTION_LIMIT] or " "}},
            {"type": "actions", "block_id": "feedback", "elements": [
                {"type": "button", "action_id": HELPFUL_ACTION, "value": value,
                 "text": {"type": "plain_text", "text": "👍 Helpful"}},
                {"type": "button", "action_id": NOT_HELPFUL_ACTION, "value": value,
                 "text": {"type": "plain_text", "text": "👎 Not helpful"}}]}]


def support_message(event: dict, bot_user_id: str, bot_id: str) -> SupportMessage | None:
    """The desk's view of a message event in a support channel; None for edits and the like."""
    if event.get("type") != "message" or event.get("subtype") not in SPOKEN_SUBTYPES:
        return None
    ts = event.get("ts") or ""
    thread = event.get("thread_ts") or ""
    mine = event.get("user") == bot_user_id or (bot_id and event.get("bot_id") == bot_id)
    return SupportMessage("slack", event.get("channel", ""), event.get("user") or event.get("bot_id", ""),
                          strip_mention(event.get("text", ""), bot_user_id), ts,
                          "" if thread == ts else thread, is_bot=bool(mine or is_from_bot(event)),
                          mine=bool(mine))


class SlackSupport(DoorDesk):
    platform = "slack"

    def __init__(self, desk: SupportDesk, client: AsyncWebClient, escalate_every_s: float = 60.0):
        self.client = client
        self._usergroups: dict[str, tuple[float, frozenset[str]]] = {}
        super().__init__(desk, escalate_every_s)

    def is_support_channel(self, channel: str) -> bool:
        return self.desk.is_support_channel("slack", channel)

    async def with_memberships(self, msg: SupportMessage) -> SupportMessage:
        """`msg` with the channel's support user group among its author's memberships when the
        author is in it (Slack's events do not say which user groups a person is in)."""
        channel = self.desk.channels.support_for("slack", msg.channel)
        group = self.desk.channels.group_of(channel) if channel else None
        if msg.is_bot or not msg.user or group is None or not group.slack_usergroup:
            return msg
        if msg.user in await self._usergroup_members(group.slack_usergroup):
            return dataclasses.replace(msg, memberships=(*msg.memberships, group.slack_usergroup))
        return msg

    async def _usergroup_members(self, group_id: str) -> frozenset[str]:
        now = time.monotonic()
        cached = self._usergroups.get(group_id)
        if cached and now - cached[0] < USERGROUP_TTL_S:
            return cached[1]
        try:
            r = await self.client.usergroups_users_list(usergroup=group_id)
            members = frozenset(r.get("users") or ())
        except SlackApiError as e:
            log.warning("could not read the members of the Slack user group %s (%s); the app needs the "
                        "usergroups:read scope (reinstall it from deploy/slack-app-manifest.yaml)",
                        group_id, e.response.get("error"))
            members = cached[1] if cached else frozenset()
        self._usergroups[group_id] = (now, members)
        return members

    async def on_message(self, msg: SupportMessage) -> None:
        msg = await self.with_memberships(msg)
        action = await self.desk.on_message(msg)
        if action is not None:
            await self.post(action)

    async def answer_again(self, msg: SupportMessage, bot_user_id: str, bot_id: str) -> None:
        """A question kept before a restart: its thread is read first (one call), for Confab's
        own reply and for a support person's."""
        try:
            r = await self.client.conversations_replies(channel=msg.channel, ts=msg.id, limit=THREAD_LOOK)
            replies = [m for m in (support_message(dict(m, type="message", channel=msg.channel), bot_user_id, bot_id)
                                   for m in r.get("messages") or [] if m.get("ts") != msg.id) if m is not None]
        except SlackApiError as e:
            if e.response.get("error") in GONE:
                log.info("not answering %s in %s after the restart: %s", msg.id, msg.channel, e.response.get("error"))
                return
            log.warning("could not read the thread of %s (%s); answering it anyway", msg.id, e.response.get("error"))
            replies = []
        replies = [await self.with_memberships(m) for m in replies]
        action = await self.desk.answer_again(msg, replies)
        if action is not None:
            await self.post(action)

    async def post(self, action: SupportAction) -> str:
        text = to_mrkdwn(action.text)
        extra = {"blocks": feedback_blocks(text, action.outcome_id)} if action.buttons else {}
        r = await self.client.chat_postMessage(channel=action.channel, thread_ts=action.thread, text=text,
                                               unfurl_links=False, **extra)
        return r["ts"]

    async def on_feedback(self, body: dict, respond) -> None:
        action = (body.get("actions") or [{}])[0]
        helpful = action.get("action_id") == HELPFUL_ACTION
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id", "")
        message = body.get("message") or {}
        thread = message.get("thread_ts") or message.get("ts") or ""
        try:
            outcome_id = json.loads(action.get("value") or "{}").get("outcome")
        except ValueError:
            outcome_id = None

        async def tell(text: str) -> None:
            await respond(text=text, response_type="ephemeral", replace_original=False)
        await self.record_feedback(channel, thread, outcome_id, helpful, tell)
