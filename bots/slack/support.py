"""Support channels on Slack: the shared `SupportDesk` (bots/common/support.py) on Slack's terms.

Every human message in a support channel goes to the desk; a new top-level question may get a
threaded answer with citations and Helpful / Not helpful buttons, or a hand-over; a person of
the support group replying in a thread makes Confab stand down there. A press of "Not helpful"
and a hand-over left unanswered ping the group in the thread.
"""
from __future__ import annotations

import asyncio
import json
import logging

from slack_sdk.web.async_client import AsyncWebClient

from ..common.support import SupportAction, SupportDesk, SupportMessage, run_escalations
from .events import SPOKEN_SUBTYPES, is_from_bot, strip_mention
from .mrkdwn import to_mrkdwn
from .reply import SECTION_LIMIT

log = logging.getLogger(__name__)

HELPFUL_ACTION = "confab_helpful"
NOT_HELPFUL_ACTION = "confab_not_helpful"


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
                          "" if thread == ts else thread, is_bot=bool(mine or is_from_bot(event)))


class SlackSupport:
    def __init__(self, desk: SupportDesk, client: AsyncWebClient, escalate_every_s: float = 60.0):
        self.desk, self.client = desk, client
        self._escalations = asyncio.ensure_future(run_escalations(desk, self.post, escalate_every_s))

    def is_support_channel(self, channel: str) -> bool:
        return self.desk.is_support_channel("slack", channel)

    async def on_message(self, msg: SupportMessage) -> None:
        action = await self.desk.on_message(msg)
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
        ping = await self.desk.feedback("slack", channel, thread, outcome_id, helpful)
        await respond(text="Thanks, noted." if helpful else "Sorry about that; I've asked the support team.",
                      response_type="ephemeral", replace_original=False)
        if ping is not None:
            await self.post(ping)

    async def stop(self) -> None:
        self._escalations.cancel()
        try:
            await self._escalations
        except (asyncio.CancelledError, Exception):
            pass
