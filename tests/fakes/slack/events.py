"""Events of the Slack fake: what people do (messages, mentions, DMs, clips, files) as the Events API
delivers it, the event_callback that wraps an event, and the echo of the bot's own messages
(over Socket Mode when a connection is open, else signed to `request_url` in HTTP mode)."""

from __future__ import annotations

import base64
import copy
import json
import re
import secrets
import string
import time
import uuid
from typing import Any, Optional

from tests.fakes.slack.protocol import _rand_id, load_fixture

_MENTION_RE = re.compile(r"<@([UWB][A-Z0-9]+)(?:\|[^>]*)?>")


def _rich_text_blocks(text: str) -> list:
    """The rich_text block a Slack client attaches to a typed message (user mentions become user elements)."""
    elements: list = []
    pos = 0
    for m in _MENTION_RE.finditer(text):
        if m.start() > pos:
            elements.append({"type": "text", "text": text[pos:m.start()]})
        elements.append({"type": "user", "user_id": m.group(1)})
        pos = m.end()
    if pos < len(text):
        elements.append({"type": "text", "text": text[pos:]})
    if not elements:
        return []
    block_id = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(5))
    return [{
        "type": "rich_text",
        "block_id": block_id,
        "elements": [{"type": "rich_text_section", "elements": elements}],
    }]


class Events:
    """Event builders and the echo of the bot's own messages (mixed into SlackFake)."""

    def _user_message(self, *, etype: str, text: str, user: str, channel: str, ts: Optional[str],
                      thread_ts: Optional[str], files: Optional[list], with_channel_type: bool) -> dict:
        ts = ts or self.new_ts()
        ev: dict = load_fixture("app_mention" if etype == "app_mention" else "message_channel")
        ev.update({
            "client_msg_id": str(uuid.uuid4()), "type": etype, "text": text, "user": user, "ts": ts,
            "blocks": _rich_text_blocks(text), "team": self.team_id, "channel": channel, "event_ts": ts,
        })
        if not ev["blocks"]:
            del ev["blocks"]
        if with_channel_type:
            ev["channel_type"] = self.channel_type(channel)
        else:
            ev.pop("channel_type", None)
        if thread_ts is not None:
            ev["thread_ts"] = thread_ts
            parent = self._find_message(channel, thread_ts)
            if parent is not None and parent.get("user"):
                ev["parent_user_id"] = parent["user"]
        if files:
            ev["files"] = copy.deepcopy(list(files))
            ev["upload"] = False
            ev["display_as_bot"] = False
            if etype == "message":
                ev["subtype"] = "file_share"
        return ev

    def app_mention_event(self, text: Optional[str] = None, *, user: str = "U1", channel: str = "C1",
                          ts: Optional[str] = None, thread_ts: Optional[str] = None,
                          files: Optional[list] = None) -> dict:
        """An app_mention event. `text` defaults to "<@BOT> question"."""
        if text is None:
            text = f"<@{self.bot_user_id}> question"
        if f"<@{self.bot_user_id}" not in text:
            self._problem(f"app_mention_event built without <@{self.bot_user_id}> in its text")
        ev = self._user_message(etype="app_mention", text=text, user=user, channel=channel, ts=ts,
                                thread_ts=thread_ts, files=files, with_channel_type=False)
        self._store_message(channel, dict(ev, type="message"))
        return ev

    def message_event(self, text: str = "hello", *, user: str = "U1", channel: str = "C1",
                      ts: Optional[str] = None, thread_ts: Optional[str] = None,
                      files: Optional[list] = None, subtype: Optional[str] = None) -> dict:
        """A message event as message.channels / message.groups / message.im deliver it
        (channel_type follows the channel). With files: subtype file_share."""
        ev = self._user_message(etype="message", text=text, user=user, channel=channel, ts=ts,
                                thread_ts=thread_ts, files=files, with_channel_type=True)
        if subtype is not None:
            ev["subtype"] = subtype
        self._store_message(channel, ev)
        return ev

    def im_event(self, text: str = "hello", *, user: str = "U1", channel: Optional[str] = None, **kw: Any) -> dict:
        """A message.im event: a DM to the bot (channel_type "im")."""
        return self.message_event(text, user=user, channel=channel or self.im_with(user), **kw)

    def file_share_event(self, files: list, text: str = "", **kw: Any) -> dict:
        """A message with subtype file_share carrying `files` (e.g. from image_file / audio_clip_file)."""
        return self.message_event(text, files=files, **kw)

    def audio_clip_event(self, content: bytes, *, mimetype: str = "audio/webm", duration_ms: int = 3000,
                         user: str = "U1", channel: str = "C1", thread_ts: Optional[str] = None,
                         transcript: Optional[str] = None, text: str = "") -> dict:
        """A voice clip: a file_share message whose only file is a slack_audio clip."""
        f = self.audio_clip_file(content, mimetype=mimetype, duration_ms=duration_ms, user=user, transcript=transcript)
        return self.message_event(text, user=user, channel=channel, thread_ts=thread_ts, files=[f])

    def bot_message_event(self, text: str = "beep", *, bot_id: str = "B0OTHER", username: str = "otherbot",
                          channel: str = "C1", ts: Optional[str] = None, thread_ts: Optional[str] = None) -> dict:
        """A message with subtype bot_message (no `user` field), as integrations post them."""
        ts = ts or self.new_ts()
        ev = load_fixture("bot_message")
        ev.update({"text": text, "ts": ts, "event_ts": ts, "bot_id": bot_id, "username": username,
                   "channel": channel, "channel_type": self.channel_type(channel)})
        if thread_ts is not None:
            ev["thread_ts"] = thread_ts
        self._store_message(channel, ev)
        return ev

    def mention_pair(self, text: Optional[str] = None, *, user: str = "U1", channel: str = "C1",
                     ts: Optional[str] = None, thread_ts: Optional[str] = None,
                     files: Optional[list] = None) -> tuple[dict, dict]:
        """(app_mention, message): the two events Slack sends for one message that mentions the bot,
        with the same ts, in two event_callbacks with different event_ids."""
        if text is None:
            text = f"<@{self.bot_user_id}> question"
        if self.channel_type(channel) == "im":
            raise ValueError("Slack sends no app_mention for a DM with the app; use im_event")
        ts = ts or self.new_ts()
        mention = self.app_mention_event(text, user=user, channel=channel, ts=ts, thread_ts=thread_ts, files=files)
        message = self._user_message(etype="message", text=text, user=user, channel=channel, ts=ts,
                                     thread_ts=thread_ts, files=files, with_channel_type=True)
        message["client_msg_id"] = mention["client_msg_id"]
        if "blocks" in mention:
            message["blocks"] = copy.deepcopy(mention["blocks"])
        return mention, message

    def events_api(self, event: dict, *, event_id: Optional[str] = None, event_time: Optional[int] = None) -> dict:
        """The event_callback body that wraps an event (Socket Mode payload / HTTP body)."""
        body = load_fixture("event_callback")
        body.update({
            "token": self.verification_token,
            "team_id": self.team_id,
            "context_team_id": self.team_id,
            "context_enterprise_id": None,
            "api_app_id": self.app_id,
            "event": copy.deepcopy(event),
            "event_id": event_id or _rand_id("Ev"),
            "event_time": event_time if event_time is not None else int(float(event.get("event_ts") or time.time())),
            "authorizations": [{
                "enterprise_id": None, "team_id": self.team_id, "user_id": self.bot_user_id,
                "is_bot": True, "is_enterprise_install": False,
            }],
        })
        ctx = {"et": event.get("type"), "tid": self.team_id, "aid": self.app_id, "cid": event.get("channel")}
        body["event_context"] = "4-" + base64.urlsafe_b64encode(json.dumps(ctx).encode()).decode().rstrip("=")
        return body

    # alias in the vocabulary of the HTTP Events API
    event_callback = events_api

    def _emit_event(self, event: dict) -> None:
        if not self.echo_bot_messages:
            return
        conn = self._current_conn()
        if conn is not None:
            async def go() -> None:
                try:
                    eid = await self.send_envelope("events_api", self.events_api(event))
                    self.echoed_envelopes.append(eid)
                    self._notify()
                except Exception:  # the connection went away: Slack would retry later; we drop it
                    pass

            self._spawn(go())
        elif self.request_url:
            url = self.request_url

            async def post() -> None:
                try:
                    await self.signed_post(url, self.event_callback_body(event), self.JSON)
                except Exception:
                    pass

            self._spawn(post())

    def _message_event_of(self, stored: dict) -> dict:
        ev = self._public(stored)
        ev["channel"] = stored["_channel"]
        ev["event_ts"] = stored["ts"]
        ev["channel_type"] = self.channel_type(stored["_channel"])
        for k in ("reply_count", "reply_users", "reply_users_count", "latest_reply"):
            ev.pop(k, None)
        return ev
