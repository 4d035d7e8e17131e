"""The Slack fake's Web API (`/api/{method}`): how a call's arguments and token are read, the
switches a test sets (rate limits, held and failing methods), and the chat, conversations, users,
usergroups and reactions methods. Files live in files.py, views.open in interactions.py and
apps.connections.open in socket_mode.py."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import re
import time
import urllib.parse
from typing import Any, Optional

from aiohttp import web

from tests.fakes.slack.blocks import MAX_BLOCKS_MESSAGE, validate_blocks
from tests.fakes.slack.protocol import Call, SlackApiFailure, _parse_multipart, _truthy, load_fixture

# Slack's own limits, used to refuse what Slack refuses.
MAX_TEXT = 40000

# Methods whose documented content type is form/query only: Slack ignores a JSON body's arguments.
FORM_ONLY_METHODS = {"conversations.history", "conversations.replies", "conversations.info", "users.info",
                     "files.info", "usergroups.users.list"}

_TS_RE = re.compile(r"^\d+\.\d+$")
_METHOD_RE = re.compile(r"^[a-zA-Z]+(\.[a-zA-Z]+)+$")
_EMOJI_RE = re.compile(r"^[a-z0-9_+\-']+(::skin-tone-[2-6])?$")


class WebApi:
    """The Web API plumbing and methods of SlackFake."""

    _PATHS = [("*", "/api/{method}", "_handle_api")]

    def rate_limit(self, method: str, times: int = 1, retry_after: int = 1) -> None:
        """The next `times` calls to `method` answer HTTP 429 with Retry-After, as Slack does."""
        self._rate_limits.setdefault(method, []).extend([int(retry_after)] * times)

    def hold(self, method: str) -> None:
        """Calls to `method` wait, unanswered, until `release(method)` (or stop()): a client
        stuck mid-work, for a kill to land at a known point."""
        self._holds.hold(method)

    def release(self, method: str) -> None:
        self._holds.release(method)

    def fail_next(self, method: str, error: str, times: int = 1, **extra: Any) -> None:
        """The next `times` calls to `method` answer {"ok": false, "error": error, **extra}."""
        self._failures.setdefault(method, []).extend([(error, extra)] * times)

    async def _parse_params(self, request: web.Request, raw: bytes) -> tuple[dict, Optional[str], str]:
        """Returns (params, token_from_body, kind). Raises SlackApiFailure like Slack would."""
        params: dict = {}
        for k, v in request.query.items():
            params[k] = v
        query_token = params.pop("token", None)
        if query_token:
            self._problem(f"{request.path}: token sent in the query string (refused for apps made after 2021-02-24)")
        body_token: Optional[str] = None
        kind = "query"
        if request.method == "POST" and raw:
            ctype = request.headers.get("Content-Type")
            if not ctype:
                raise SlackApiFailure("missing_post_type")
            mime = ctype.split(";", 1)[0].strip().lower()
            if mime == "application/x-www-form-urlencoded":
                kind = "form"
                try:
                    form = urllib.parse.parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
                except UnicodeDecodeError:
                    raise SlackApiFailure("invalid_form_data")
                for k, v in form:
                    params[k] = v
                body_token = params.pop("token", None)
            elif mime == "multipart/form-data":
                kind = "multipart"
                for name, filename, data in _parse_multipart(ctype, raw):
                    params[name] = data if filename else data.decode("utf-8")
                body_token = params.pop("token", None)
            elif mime == "application/json":
                kind = "json"
                if "charset" not in ctype.lower():
                    params["__warning"] = "missing_charset"
                try:
                    obj = json.loads(raw.decode("utf-8"))
                except ValueError:
                    raise SlackApiFailure("invalid_json")
                if not isinstance(obj, dict):
                    raise SlackApiFailure("invalid_json")
                if "token" in obj:
                    obj.pop("token")
                    self._problem(f"{request.path}: token in a JSON body is ignored by Slack; use Authorization")
                params.update(obj)
            elif mime == "text/plain":
                kind = "text"
            else:
                raise SlackApiFailure("invalid_post_type")
        return params, body_token, kind

    def _token_kind(self, token: Optional[str]) -> str:
        if not token:
            return "none"
        if token == self.bot_token:
            return "bot"
        if token == self.app_token:
            return "app"
        return "invalid"

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        raw = await request.read()
        headers = {k: v for k, v in request.headers.items()}
        call = Call(method=method, params={}, headers=headers, time=time.time(), http_method=request.method,
                    path=request.path_qs, body=raw, content_type=request.headers.get("Content-Type", ""))
        self.calls.append(call)
        try:
            resp_headers: dict = {}
            try:
                parsed = await self._parse_params(request, raw)
                call.params = dict(parsed[0])
            except SlackApiFailure as e:
                parsed = e
            if method in self._rate_limits and self._rate_limits[method]:
                retry_after = self._rate_limits[method].pop(0)
                call.status = 429
                call.response = {"ok": False, "error": "ratelimited"}
                resp_headers["Retry-After"] = str(retry_after)
                return self._json(call.response, status=429, headers=resp_headers)
            try:
                if isinstance(parsed, SlackApiFailure):
                    raise parsed
                params, body_token, kind = parsed
                if kind == "json" and method in FORM_ONLY_METHODS:
                    self._problem(f"{method} does not take a JSON body; Slack ignores its arguments")
                    params = {k: v for k, v in request.query.items() if k != "token"}
                call.params = params
                warning = params.pop("__warning", None)
                handler = (getattr(self, "_api_" + method.replace(".", "_"), None)
                           if _METHOD_RE.match(method) else None)
                if handler is None:
                    raise SlackApiFailure("unknown_method", req_method=method)
                auth = request.headers.get("Authorization", "")
                token: Optional[str] = None
                if auth:
                    if not auth.startswith("Bearer "):
                        raise SlackApiFailure("invalid_auth")
                    token = auth[len("Bearer "):].strip()
                elif body_token:
                    token = body_token
                tk = self._token_kind(token)
                if tk == "none":
                    raise SlackApiFailure("not_authed")
                if tk == "invalid":
                    raise SlackApiFailure("invalid_auth")
                wanted = "app" if method == "apps.connections.open" else "bot"
                if tk != wanted:
                    raise SlackApiFailure("not_allowed_token_type")
                held = self._holds.find(lambda key: key == method)
                if held is not None:
                    self._notify()
                    await held.wait()
                if method in self._failures and self._failures[method]:
                    error, extra = self._failures[method].pop(0)
                    raise SlackApiFailure(error, **extra)
                result = handler(params, request)
                if asyncio.iscoroutine(result):
                    result = await result
                body = {"ok": True}
                body.update(result)
                if warning:
                    body["warning"] = warning
                    body.setdefault("response_metadata", {})["warnings"] = [warning]
                call.response = body
                return self._json(body)
            except SlackApiFailure as e:
                body = {"ok": False, "error": e.error}
                body.update(e.extra)
                if e.messages:
                    body["response_metadata"] = {"messages": e.messages}
                call.status = e.status
                call.response = body
                return self._json(body, status=e.status)
            except Exception as e:  # a bug in the fake, not a Slack error: make it loud
                import traceback

                self._problem(f"SlackFake bug in {method}: {e!r}\n{traceback.format_exc()}")
                call.status = 500
                call.response = {"ok": False, "error": "internal_error"}
                return self._json(call.response, status=500)
        finally:
            self._notify()

    @staticmethod
    def _json(body: Any, status: int = 200, headers: Optional[dict] = None) -> web.Response:
        return web.Response(status=status, body=json.dumps(body).encode("utf-8"), headers=headers,
                            content_type="application/json", charset="utf-8")

    @staticmethod
    def _require(params: dict, *names: str, error: str = "invalid_arguments") -> None:
        missing = [n for n in names if params.get(n) in (None, "")]
        if missing:
            raise SlackApiFailure(error, *[f"[ERROR] missing required field: {n}" for n in missing])

    @staticmethod
    def _json_arg(value: Any, name: str, error: str = "invalid_arguments") -> Any:
        if value is None or isinstance(value, (list, dict)):
            return value
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        try:
            return json.loads(value)
        except ValueError:
            raise SlackApiFailure(error, f"[ERROR] failed to parse {name} as JSON")

    def _resolve_channel(self, channel: Any, *, allow_names: bool = True, allow_user: bool = True) -> dict:
        if not channel or not isinstance(channel, str):
            raise SlackApiFailure("channel_not_found")
        if channel in self.channels:
            return self.channels[channel]
        if allow_user and channel[:1] in ("U", "W") and channel in self.users:
            return self.channels[self.im_with(channel)]
        if allow_names:
            name = channel.lstrip("#")
            for ch in self.channels.values():
                if ch["name"] == name:
                    return ch
        raise SlackApiFailure("channel_not_found")

    def _channel_id(self, params: dict) -> str:
        """The channel a method names by its id (no names, no user ids): channel_not_found otherwise."""
        channel = params.get("channel")
        if not channel or channel not in self.channels:
            raise SlackApiFailure("channel_not_found")
        return channel

    def _check_postable(self, ch: dict) -> None:
        if ch["is_archived"]:
            raise SlackApiFailure("is_archived")
        if self.bot_user_id not in ch["members"]:
            raise SlackApiFailure("not_in_channel")

    def _message_content(self, params: dict, *, require: bool = True) -> dict:
        """text / blocks / attachments of chat.postMessage and chat.update, validated like Slack."""
        out: dict = {}
        text = params.get("text")
        markdown_text = params.get("markdown_text")
        blocks = params.get("blocks")
        attachments = params.get("attachments")
        if markdown_text not in (None, "") and (text not in (None, "") or blocks not in (None, "", [])):
            raise SlackApiFailure("markdown_text_conflict")
        if blocks not in (None, "", "[]", []):
            out["blocks"] = validate_blocks(blocks, max_blocks=MAX_BLOCKS_MESSAGE)
        if attachments not in (None, "", "[]", []):
            att = self._json_arg(attachments, "attachments", error="invalid_attachments")
            if not isinstance(att, list):
                raise SlackApiFailure("invalid_attachments")
            if len(att) > 100:
                raise SlackApiFailure("too_many_attachments")
            out["attachments"] = att
        if text not in (None, ""):
            if not isinstance(text, str):
                text = str(text)
            if len(text) > MAX_TEXT:
                raise SlackApiFailure("msg_too_long")
            out["text"] = text
        if markdown_text not in (None, ""):
            if len(markdown_text) > 12000:
                raise SlackApiFailure("markdown_text_too_long")
            out["text"] = markdown_text
            out["blocks"] = [{"type": "markdown", "text": markdown_text}]
        if require and not any(k in out for k in ("text", "blocks", "attachments")):
            raise SlackApiFailure("no_text")
        out.setdefault("text", "")
        return out

    def _bot_message(self, channel: str, content: dict, ts: Optional[str] = None) -> dict:
        ts = ts or self.new_ts()
        msg = load_fixture("message_from_app")
        for k in ("channel", "event_ts", "channel_type"):
            msg.pop(k, None)
        msg.update({"bot_id": self.bot_id, "user": self.bot_user_id, "ts": ts, "app_id": self.app_id,
                    "team": self.team_id, "blocks": []})
        msg["bot_profile"] = dict(msg["bot_profile"], id=self.bot_id, name=self.bot_name, app_id=self.app_id,
                                  team_id=self.team_id, updated=int(time.time()))
        msg.update(content)
        if not msg.get("blocks"):
            msg.pop("blocks", None)
        return msg

    def _thread_parent(self, ch: dict, thread_ts: Any) -> tuple[Optional[str], bool]:
        """Resolves thread_ts like Slack: malformed -> invalid_thread_ts; a reply's ts -> its thread;
        unknown -> accepted, but the message is lost from view (orphan)."""
        if thread_ts in (None, ""):
            return None, False
        if not isinstance(thread_ts, str):
            thread_ts = str(thread_ts)
        if not _TS_RE.match(thread_ts):
            raise SlackApiFailure("invalid_thread_ts", f"[ERROR] {thread_ts} is not a valid thread_ts")
        parent = self._find_message(ch["id"], thread_ts)
        if parent is None:
            self._problem(f"reply to thread_ts {thread_ts} in {ch['id']}: no such message (Slack accepts it and "
                          f"the reply shows up nowhere)")
            return thread_ts, True
        if parent.get("thread_ts") and parent["thread_ts"] != parent["ts"]:
            self._problem(f"thread_ts {thread_ts} is a reply, not a thread parent; use {parent['thread_ts']}")
            return parent["thread_ts"], False
        return thread_ts, False

    def _api_auth_test(self, params: dict, request: web.Request) -> dict:
        body = load_fixture("auth_test")
        body.pop("ok", None)
        body.update({"url": f"https://{self.team_domain}.slack.com/", "team": self.team_name, "user": self.bot_name,
                     "team_id": self.team_id, "user_id": self.bot_user_id, "bot_id": self.bot_id,
                     "is_enterprise_install": False})
        return body

    def _api_chat_postMessage(self, params: dict, request: web.Request) -> dict:
        ch = self._resolve_channel(params.get("channel"))
        self._check_postable(ch)
        content = self._message_content(params)
        thread_ts, orphan = self._thread_parent(ch, params.get("thread_ts"))
        msg = self._bot_message(ch["id"], content)
        if thread_ts:
            msg["thread_ts"] = thread_ts
            parent = self._find_message(ch["id"], thread_ts)
            if parent is not None and parent.get("user"):
                msg["parent_user_id"] = parent["user"]
            if _truthy(params.get("reply_broadcast")):
                msg["subtype"] = "thread_broadcast"
        if params.get("metadata"):
            msg["metadata"] = self._json_arg(params["metadata"], "metadata", error="invalid_metadata_format")
        if orphan:
            msg["_orphan"] = True
            self.orphans.append(self._public(msg) | {"channel": ch["id"]})
            self._messages[ch["id"]].append(dict(msg, _channel=ch["id"]))
        else:
            stored = self._store_message(ch["id"], msg)
            self._emit_event(self._message_event_of(stored))
        return {"channel": ch["id"], "ts": msg["ts"], "message": self._public(msg)}

    def _api_chat_update(self, params: dict, request: web.Request) -> dict:
        channel = self._channel_id(params)
        ts = params.get("ts")
        if not ts:
            raise SlackApiFailure("message_not_found")
        msg = self._find_message(channel, str(ts))
        if msg is None:
            raise SlackApiFailure("message_not_found")
        if msg.get("bot_id") != self.bot_id:
            raise SlackApiFailure("cant_update_message")
        content = self._message_content(params, require=False)
        if not any(params.get(k) not in (None, "") for k in ("text", "blocks", "attachments", "markdown_text",
                                                              "file_ids", "reply_broadcast", "metadata")):
            raise SlackApiFailure("no_text")
        previous = self._public(msg)
        if "text" in content and (params.get("text") not in (None, "") or params.get("markdown_text")):
            msg["text"] = content["text"]
        if "blocks" in content:
            msg["blocks"] = content["blocks"]
        elif params.get("blocks") in ("[]", []):
            msg.pop("blocks", None)
        if "attachments" in content:
            msg["attachments"] = content["attachments"]
        edit_ts = self.new_ts()
        msg["edited"] = {"user": self.bot_user_id, "ts": edit_ts}
        self._notify()
        ev = load_fixture("message_changed")
        ev.update({"channel": channel, "ts": edit_ts, "event_ts": edit_ts, "channel_type": self.channel_type(channel),
                   "message": self._public(msg), "previous_message": previous})
        self._emit_event(ev)
        return {"channel": channel, "ts": msg["ts"], "text": msg.get("text", ""), "message": self._public(msg)}

    def _api_chat_postEphemeral(self, params: dict, request: web.Request) -> dict:
        ch = self._resolve_channel(params.get("channel"), allow_user=False)
        user = params.get("user")
        if not user:
            raise SlackApiFailure("user_not_found")
        if user not in self.users:
            raise SlackApiFailure("user_not_found")
        self._check_postable(ch)
        if user not in ch["members"]:
            raise SlackApiFailure("user_not_in_channel")
        content = self._message_content(params)
        thread_ts, _ = self._thread_parent(ch, params.get("thread_ts"))
        ts = self.new_ts()
        msg = self._bot_message(ch["id"], content, ts)
        msg.update({"channel": ch["id"], "for_user": user, "thread_ts": thread_ts})
        self.ephemerals.append(msg)
        self._notify()
        return {"message_ts": ts}

    def _api_chat_delete(self, params: dict, request: web.Request) -> dict:
        channel = self._channel_id(params)
        ts = str(params.get("ts") or "")
        msg = self._find_message(channel, ts)
        if msg is None:
            raise SlackApiFailure("message_not_found")
        if msg.get("bot_id") != self.bot_id:
            raise SlackApiFailure("cant_delete_message")
        self._messages[channel].remove(msg)
        self.deleted.append(self._public(msg) | {"channel": channel})
        self._notify()
        ev_ts = self.new_ts()
        ev = load_fixture("message_deleted")
        ev.update({"channel": channel, "ts": ev_ts, "event_ts": ev_ts, "deleted_ts": ts,
                   "previous_message": self._public(msg), "channel_type": self.channel_type(channel)})
        self._emit_event(ev)
        return {"channel": channel, "ts": ts}

    @staticmethod
    def _page(items: list, params: dict, default_limit: int) -> tuple[list, dict]:
        try:
            limit = int(params.get("limit") or default_limit)
        except (TypeError, ValueError):
            raise SlackApiFailure("invalid_limit")
        limit = max(1, min(limit, 1000))
        start = 0
        cursor = params.get("cursor")
        if cursor:
            try:
                start = int(base64.b64decode(cursor).decode().split(":", 1)[1])
            except Exception:
                raise SlackApiFailure("invalid_cursor")
        page = items[start:start + limit]
        more = start + limit < len(items)
        nxt = base64.b64encode(f"next_ts:{start + limit}".encode()).decode() if more else ""
        return page, {"has_more": more, "response_metadata": {"next_cursor": nxt}}

    @staticmethod
    def _time_filter(msgs: list, params: dict) -> list:
        try:
            oldest = float(params.get("oldest") or 0)
            latest = float(params.get("latest") or 1e12)
        except (TypeError, ValueError):
            raise SlackApiFailure("invalid_ts_oldest")
        if _truthy(params.get("inclusive")):
            return [m for m in msgs if oldest <= float(m["ts"]) <= latest]
        return [m for m in msgs if oldest < float(m["ts"]) < latest]

    def _api_conversations_replies(self, params: dict, request: web.Request) -> dict:
        channel = self._channel_id(params)
        ts = params.get("ts")
        if not ts:
            raise SlackApiFailure("invalid_arguments", "[ERROR] missing required field: ts")
        msg = self._find_message(channel, str(ts))
        if msg is None:
            raise SlackApiFailure("thread_not_found")
        root = msg.get("thread_ts") or msg["ts"]
        thread = self.messages(channel, root)
        thread = self._time_filter(thread, params) if (params.get("oldest") or params.get("latest")) else thread
        page, meta = self._page(thread, params, 1000)
        return {"messages": page, **meta}

    def _api_conversations_history(self, params: dict, request: web.Request) -> dict:
        channel = self._channel_id(params)
        if self.bot_user_id not in self.channels[channel]["members"]:
            raise SlackApiFailure("not_in_channel")
        msgs = list(reversed(self.messages(channel, top_level_only=True)))
        if params.get("oldest") or params.get("latest"):
            msgs = self._time_filter(msgs, params)
        page, meta = self._page(msgs, params, 100)
        return {"messages": page, "pin_count": 0, "channel_actions_ts": None, "channel_actions_count": 0, **meta}

    def _api_conversations_info(self, params: dict, request: web.Request) -> dict:
        channel = self._channel_id(params)
        ch = self.channels[channel]
        info = {k: v for k, v in ch.items() if k != "members"}
        info["is_member"] = self.bot_user_id in ch["members"]
        if ch["is_im"]:
            info.pop("name", None)
        return {"channel": info}

    def _api_usergroups_users_list(self, params: dict, request: web.Request) -> dict:
        # https://api.slack.com/methods/usergroups.users.list
        group = params.get("usergroup")
        if not group:
            raise SlackApiFailure("invalid_arguments", "[ERROR] missing required field: usergroup")
        if group not in self.usergroups:
            raise SlackApiFailure("no_such_subteam")
        return {"users": list(self.usergroups[group])}

    def _api_users_info(self, params: dict, request: web.Request) -> dict:
        user = params.get("user")
        if not user or user not in self.users:
            raise SlackApiFailure("user_not_found")
        return {"user": copy.deepcopy(self.users[user])}

    def _api_reactions_add(self, params: dict, request: web.Request) -> dict:
        channel = params.get("channel")
        ts = params.get("timestamp")
        name = params.get("name")
        if not channel or not ts:
            raise SlackApiFailure("no_item_specified")
        if channel not in self.channels:
            raise SlackApiFailure("channel_not_found")
        if not name or not _EMOJI_RE.match(str(name)):
            raise SlackApiFailure("invalid_name")
        if self.bot_user_id not in self.channels[channel]["members"]:
            raise SlackApiFailure("not_in_channel")
        msg = self._find_message(channel, str(ts))
        if msg is None:
            raise SlackApiFailure("message_not_found")
        reactions = msg.setdefault("reactions", [])
        r = next((r for r in reactions if r["name"] == name), None)
        if r is None:
            r = {"name": name, "users": [], "count": 0}
            reactions.append(r)
        if self.bot_user_id in r["users"]:
            raise SlackApiFailure("already_reacted")
        r["users"].append(self.bot_user_id)
        r["count"] += 1
        self._notify()
        return {}
