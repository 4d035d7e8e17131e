"""Interactivity on the Slack fake: slash commands and block actions as Slack sends them, their
trigger ids (views.open takes each once, within its time) and response URLs (five uses in
thirty minutes)."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any, Optional

from aiohttp import web

from tests.fakes.slack.blocks import MAX_BLOCKS_VIEW, validate_blocks
from tests.fakes.slack.protocol import Call, SlackApiFailure, _rand_id, load_fixture

MAX_VIEW_TITLE = 24
TRIGGER_TTL_S = 3.0
RESPONSE_URL_MAX_USES = 5


class Interactions:
    """Slash commands, block actions, views and response URLs of SlackFake."""

    _PATHS = [("POST", "/commands/{team}/{n}/{secret}", "_handle_response_url"),
              ("POST", "/actions/{team}/{n}/{secret}", "_handle_response_url")]

    def _new_trigger(self, user: str) -> str:
        trig = f"{secrets.randbelow(10**12)}.{secrets.randbelow(10**11)}.{secrets.token_hex(16)}"
        self._triggers[trig] = {"created": time.monotonic(), "used": False, "user": user}
        return trig

    def _new_response_url(self, kind: str, channel: Optional[str], message_ts: Optional[str] = None) -> str:
        n = f"{secrets.randbelow(10**12)}"
        path = f"/{kind}/{self.team_id}/{n}/{secrets.token_urlsafe(18)}"
        self._response_urls[path] = {"kind": kind, "uses": 0, "channel": channel, "message_ts": message_ts,
                                     "created": time.time()}
        return f"http://127.0.0.1:{self.port}{path}"

    def slash_commands(self, command: str = "/ask", text: str = "", *, user: str = "U1",
                       channel: str = "C1", **overrides: Any) -> dict:
        """A slash command's fields (all strings, as Slack form-encodes them): the Socket Mode
        slash_commands payload, or the HTTP form body via slash_command_body."""
        if not command.startswith("/"):
            raise ValueError("a slash command starts with /")
        ch = self.channels.get(channel)
        if ch is None:
            channel_name = "unknown"
        elif ch["is_im"]:
            channel_name = "directmessage"
        elif ch["is_private"]:
            channel_name = "privategroup"
        else:
            channel_name = ch["name"]
        p = load_fixture("slash_command")
        p.update({
            "token": self.verification_token,
            "team_id": self.team_id,
            "team_domain": self.team_domain,
            "channel_id": channel,
            "channel_name": channel_name,
            "user_id": user,
            "user_name": self.users.get(user, {}).get("name", user.lower()),
            "command": command,
            "text": text,
            "api_app_id": self.app_id,
            "is_enterprise_install": "false",
            "response_url": self._new_response_url("commands", channel),
            "trigger_id": self._new_trigger(user),
        })
        p.update({k: str(v) for k, v in overrides.items()})
        return p

    def interactive(self, action_id: str = "button", value: Optional[str] = None, *, user: str = "U1",
                    channel: str = "C1", message_ts: Optional[str] = None, message: Optional[dict] = None,
                    block_id: Optional[str] = None, action_type: str = "button", text: str = "Button",
                    ephemeral: bool = False, state: Optional[dict] = None) -> dict:
        """A block_actions payload: the user clicked `action_id` in a message in `channel`.

        The message defaults to the stored message with `message_ts`, else the bot's latest
        message in the channel."""
        if message is None and not ephemeral:
            if message_ts is not None:
                stored = self._find_message(channel, message_ts)
                if stored is None:
                    raise ValueError(f"no message {message_ts} in {channel}")
                message = self._public(stored)
            else:
                mine = self.bot_messages(channel)
                if not mine:
                    raise ValueError(f"the bot has posted nothing in {channel} to click on")
                message = mine[-1]
        if message is not None:
            message_ts = message["ts"]
        if message_ts is None:
            message_ts = self.new_ts()
        if block_id is None:
            block_id = "actions"
            for b in (message or {}).get("blocks", []) or []:
                for el in b.get("elements", []) or []:
                    if isinstance(el, dict) and el.get("action_id") == action_id:
                        block_id = b.get("block_id", block_id)
        action: dict = {"action_id": action_id, "block_id": block_id, "type": action_type,
                        "action_ts": f"{time.time():.6f}"}
        if action_type == "button":
            action["text"] = {"type": "plain_text", "text": text, "emoji": True}
            if value is not None:
                action["value"] = value
        elif action_type == "static_select":
            action["selected_option"] = {"text": {"type": "plain_text", "text": text, "emoji": True}, "value": value}
        elif value is not None:
            action["value"] = value
        ch = self.channels.get(channel, {})
        u = self.users.get(user, {})
        p = load_fixture("block_actions")
        p.update({
            "user": {"id": user, "username": u.get("name", user), "name": u.get("name", user), "team_id": self.team_id},
            "api_app_id": self.app_id,
            "token": self.verification_token,
            "container": {"type": "message", "message_ts": message_ts, "channel_id": channel,
                          "is_ephemeral": ephemeral},
            "trigger_id": self._new_trigger(user),
            "team": {"id": self.team_id, "domain": self.team_domain},
            "channel": {"id": channel, "name": ch.get("name") or ("directmessage" if ch.get("is_im") else channel)},
            "state": state if state is not None else {"values": {}},
            "response_url": self._new_response_url("actions", channel, message_ts),
            "actions": [action],
        })
        if message is not None:
            p["message"] = message
        else:
            p.pop("message", None)
        return p

    block_actions = interactive

    def _api_views_open(self, params: dict, request: web.Request) -> dict:
        trig = params.get("trigger_id")
        if not trig and not params.get("interactivity_pointer"):
            raise SlackApiFailure("invalid_arguments", "[ERROR] missing required field: trigger_id")
        t = self._triggers.get(trig) if trig else None
        if t is None:
            raise SlackApiFailure("invalid_arguments", "invalid `trigger_id`")
        if t["used"]:
            raise SlackApiFailure("exchanged_trigger_id")
        if time.monotonic() - t["created"] > self.trigger_ttl:
            raise SlackApiFailure("expired_trigger_id")
        view = self._json_arg(params.get("view"), "view")
        if not isinstance(view, dict):
            raise SlackApiFailure("invalid_arguments", "[ERROR] missing required field: view")
        errs = []
        if view.get("type") not in ("modal",):
            errs.append("[ERROR] must be modal [json-pointer:/view/type]")
        title = view.get("title")
        if not isinstance(title, dict) or title.get("type") != "plain_text" or not title.get("text"):
            errs.append("[ERROR] missing required field: title [json-pointer:/view/title]")
        elif len(title["text"]) > MAX_VIEW_TITLE:
            errs.append(f"[ERROR] must be less than {MAX_VIEW_TITLE + 1} characters [json-pointer:/view/title/text]")
        for k in ("submit", "close"):
            if k in view and (not isinstance(view[k], dict) or len(view[k].get("text", "")) > MAX_VIEW_TITLE):
                errs.append(f"[ERROR] must be less than {MAX_VIEW_TITLE + 1} characters [json-pointer:/view/{k}/text]")
        blocks = view.get("blocks")
        if not isinstance(blocks, list):
            errs.append("[ERROR] missing required field: blocks [json-pointer:/view/blocks]")
        else:
            try:
                validate_blocks(blocks, max_blocks=MAX_BLOCKS_VIEW, error="invalid_arguments")
            except SlackApiFailure as e:
                errs.extend(e.messages)
            if any(isinstance(b, dict) and b.get("type") == "input" for b in blocks) and "submit" not in view:
                errs.append("[ERROR] submit is required when an input block is present [json-pointer:/view/submit]")
        if len(json.dumps(view)) > 250_000:
            raise SlackApiFailure("view_too_large")
        if errs:
            raise SlackApiFailure("invalid_arguments", *errs)
        t["used"] = True
        vid = _rand_id("V")
        full = dict(view)
        full.update({"id": vid, "team_id": self.team_id, "state": {"values": {}},
                     "hash": f"{int(time.time())}.{secrets.token_hex(4)}",
                     "previous_view_id": None, "root_view_id": vid, "app_id": self.app_id, "bot_id": self.bot_id,
                     "private_metadata": view.get("private_metadata", ""), "callback_id": view.get("callback_id", ""),
                     "external_id": view.get("external_id", ""), "clear_on_close": bool(view.get("clear_on_close")),
                     "notify_on_close": bool(view.get("notify_on_close"))})
        self.views.append({"user": t["user"], "trigger_id": trig, "view": full})
        return {"view": full}

    async def _handle_response_url(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        path = request.path
        call = Call(method="response_url", params={}, headers=dict(request.headers), time=time.time(),
                    http_method="POST", path=path, body=raw, content_type=request.headers.get("Content-Type", ""))
        self.calls.append(call)
        try:
            meta = self._response_urls.get(path)
            if meta is None:
                call.status = 404
                call.response = "invalid_url"
                return web.Response(status=404, text="invalid_url")
            if time.time() - meta["created"] > 30 * 60:
                call.status = 404
                call.response = "expired_url"
                return web.Response(status=404, text="expired_url")
            meta["uses"] += 1
            if meta["uses"] > RESPONSE_URL_MAX_USES:
                call.status = 404
                call.response = "used_url"
                return web.Response(status=404, text="used_url")
            try:
                payload = json.loads(raw.decode("utf-8"))
                if not isinstance(payload, dict):
                    raise ValueError
            except ValueError:
                call.status = 400
                call.response = "invalid_payload"
                return web.Response(status=400, text="invalid_payload")
            call.params = payload
            entry = {"url": str(request.url), "path": path, "kind": meta["kind"], "json": payload,
                     "time": time.time(), "channel": meta["channel"]}
            self.response_url_posts.append(entry)
            channel = meta["channel"]
            try:
                if payload.get("delete_original") and meta.get("message_ts"):
                    m = self._find_message(channel, meta["message_ts"])
                    if m is not None:
                        self._messages[channel].remove(m)
                        self.deleted.append(self._public(m) | {"channel": channel})
                elif payload.get("replace_original") and meta.get("message_ts"):
                    m = self._find_message(channel, meta["message_ts"])
                    if m is not None:
                        content = self._message_content(payload)
                        m.update({k: v for k, v in content.items()})
                        m["edited"] = {"user": self.bot_user_id, "ts": self.new_ts()}
                elif payload.get("response_type") == "in_channel" and channel in self.channels:
                    content = self._message_content(payload)
                    msg = self._bot_message(channel, content)
                    tts = payload.get("thread_ts")
                    if tts:
                        msg["thread_ts"] = tts
                    self._store_message(channel, msg)
                else:
                    content = self._message_content(payload)
                    self.ephemerals.append(self._bot_message(channel, content) | {"channel": channel,
                                                                                   "via": "response_url"})
            except SlackApiFailure as e:
                call.status = 400
                call.response = e.error
                return web.Response(status=400, text=e.error)
            call.response = "ok"
            return web.Response(status=200, text="ok", content_type="text/html")
        finally:
            self._notify()
