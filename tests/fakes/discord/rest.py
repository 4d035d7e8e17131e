"""The Discord fake's REST API (`/api/v10`): the route table, bot authentication and the
User-Agent Cloudflare asks for, rate-limit buckets and 429s, bodies (JSON or multipart), the
switches a test sets (rate limits, held and failing routes), the recording a test waits on, and
the routes for users, members, DMs, the application and the gateway URL."""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from aiohttp import web

from tests.fakes.discord.protocol import (
    API_VERSION,
    BOT_PERMISSIONS,
    ErrorCode,
    RecordedFile,
    RecordedRequest,
    _error,
    _form_error,
    _HTTPError,
    _json_response,
)

# Rate-limit buckets: (method, route template) -> (limit, per seconds).  Discord does not
# publish per-route numbers; these are the values its headers show for the common routes
# (message create/edit: 5 per 5 s per channel).  Anything else falls back to "default".
DEFAULT_BUCKETS: Dict[str, Tuple[int, float]] = {
    "POST /channels/{channel_id}/messages": (5, 5.0),
    "PATCH /channels/{channel_id}/messages/{message_id}": (5, 5.0),
    "DELETE /channels/{channel_id}/messages/{message_id}": (5, 1.0),
    "POST /webhooks/{webhook_id}/{webhook_token}": (5, 2.0),
    "PATCH /webhooks/{webhook_id}/{webhook_token}/messages/{message_id}": (5, 2.0),
    "default": (50, 1.0),
}


class _Rule:
    def __init__(self, pattern: str, method: Optional[str], times: int, **kw: Any) -> None:
        self.pattern, self.method, self.times, self.kw = pattern, (method.upper() if method else None), times, kw

    def matches(self, method: str, path: str) -> bool:
        return self.times > 0 and (self.method is None or self.method == method) and self.pattern in path


class _Bucket:
    def __init__(self, name: str, limit: int, per: float) -> None:
        self.hash = hashlib.sha1(name.encode()).hexdigest()[:32]
        self.limit, self.per = limit, per
        self.remaining = limit
        self.reset_at = 0.0


class Rest:
    """The REST plumbing of DiscordFake."""

    _PATHS = [("*", "/api/v{version}/{tail:.*}", "_api_entry")]

    def rate_limit(self, route_substring: str, times: int = 1, retry_after: float = 0.5, *,
                   method: Optional[str] = None, global_: bool = False, scope: str = "user") -> None:
        """Answer the next ``times`` requests whose path contains ``route_substring`` with 429."""
        self._rate_rules.append(_Rule(route_substring, method, times, retry_after=retry_after,
                                      global_=global_, scope="global" if global_ else scope))

    def hold(self, path: str, method: str = "GET") -> None:
        """Requests whose path starts with ``path`` (as the client sends it, e.g.
        "/api/v10/channels/1/messages", or an attachment's CDN path) wait unanswered until
        :meth:`release`: a client stuck mid-work, for a kill to land at a known point."""
        self._holds.hold((method.upper(), path))

    def release(self, path: str, method: str = "GET") -> None:
        self._holds.release((method.upper(), path))

    def release_all(self) -> None:
        self._holds.release_all()

    async def _wait_if_held(self, request: web.Request) -> None:
        held = self._holds.find(lambda key: key[0] == request.method and request.path.startswith(key[1]))
        if held is not None:
            self.held.append(f"{request.method} {request.path}")
            self._touch()
            await held.wait()

    def fail_next(self, route_substring: str, status: int, body: Optional[dict] = None, *, times: int = 1,
                  method: Optional[str] = None) -> None:
        """Answer the next ``times`` matching requests with ``status`` / ``body`` (e.g. 403 50013, 500)."""
        if body is None:
            body = {"message": f"{status}: fake failure", "code": 0}
        self._faults.append(_Rule(route_substring, method, times, status=status, body=body))

    def find(self, method: Optional[str] = None, path_substring: str = "",
             predicate: Optional[Callable[[RecordedRequest], bool]] = None,
             status: Optional[int] = None) -> List[RecordedRequest]:
        """All recorded requests that match (does not consume them)."""
        return [r for r in self.requests if self._req_matches(r, method, path_substring, predicate, status)]

    @staticmethod
    def _req_matches(r: RecordedRequest, method: Optional[str], path_substring: str,
                     predicate: Optional[Callable[[RecordedRequest], bool]], status: Optional[int]) -> bool:
        if method is not None and r.method != method.upper():
            return False
        if path_substring not in r.path:
            return False
        if status is not None and r.status != status:
            return False
        return predicate is None or bool(predicate(r))

    async def wait_for(self, method: Optional[str], path_substring: str,
                       predicate: Optional[Callable[[RecordedRequest], bool]] = None,
                       timeout: float = 10.0, *, status: Optional[int] = None) -> RecordedRequest:
        """The earliest matching request not returned by an earlier ``wait_for``.

        Requests that arrived before the call count, so there is no race; each request
        is returned at most once, so two waits for the same route see two requests.
        """
        def check() -> Optional[RecordedRequest]:
            for r in self.requests:
                if r.index not in self._consumed and self._req_matches(r, method, path_substring, predicate, status):
                    self._consumed.add(r.index)
                    return r
            return None
        return await self._wait_until(check, timeout, f"{method or '*'} {path_substring!r}")

    _ROUTES: List[Tuple[str, str, str, bool]] = [
        # (method, regex, handler, needs bot auth)
        ("GET", r"/users/@me", "_h_me", True),
        ("GET", r"/users/(?P<user_id>\d+)", "_h_user", True),
        ("GET", r"/guilds/(?P<guild_id>\d+)/members/(?P<user_id>\d+)", "_h_get_member", True),
        ("POST", r"/users/@me/channels", "_h_create_dm", True),
        ("GET", r"/oauth2/applications/@me", "_h_application", True),
        ("GET", r"/applications/@me", "_h_application", True),
        ("GET", r"/gateway", "_h_gateway", False),
        ("GET", r"/gateway/bot", "_h_gateway_bot", True),
        ("GET", r"/channels/(?P<channel_id>\d+)", "_h_get_channel", True),
        ("GET", r"/channels/(?P<channel_id>\d+)/messages", "_h_history", True),
        ("POST", r"/channels/(?P<channel_id>\d+)/messages", "_h_create_message", True),
        ("GET", r"/channels/(?P<channel_id>\d+)/messages/(?P<message_id>\d+)", "_h_get_message", True),
        ("PATCH", r"/channels/(?P<channel_id>\d+)/messages/(?P<message_id>\d+)", "_h_edit_message", True),
        ("DELETE", r"/channels/(?P<channel_id>\d+)/messages/(?P<message_id>\d+)", "_h_delete_message", True),
        ("PUT", r"/channels/(?P<channel_id>\d+)/messages/(?P<message_id>\d+)/reactions/(?P<emoji>[^/]+)/@me",
         "_h_reaction", True),
        ("DELETE", r"/channels/(?P<channel_id>\d+)/messages/(?P<message_id>\d+)/reactions/(?P<emoji>[^/]+)/@me",
         "_h_reaction", True),
        ("POST", r"/channels/(?P<channel_id>\d+)/messages/(?P<message_id>\d+)/threads", "_h_start_thread", True),
        ("POST", r"/channels/(?P<channel_id>\d+)/typing", "_h_typing", True),
        ("POST", r"/channels/(?P<channel_id>\d+)/attachments", "_h_upload_slots", True),
        ("GET", r"/applications/(?P<application_id>\d+)/commands", "_h_get_commands", True),
        ("PUT", r"/applications/(?P<application_id>\d+)/commands", "_h_put_commands", True),
        ("POST", r"/applications/(?P<application_id>\d+)/commands", "_h_post_command", True),
        ("GET", r"/applications/(?P<application_id>\d+)/guilds/(?P<guild_id>\d+)/commands", "_h_get_commands", True),
        ("PUT", r"/applications/(?P<application_id>\d+)/guilds/(?P<guild_id>\d+)/commands", "_h_put_commands", True),
        ("POST", r"/applications/(?P<application_id>\d+)/guilds/(?P<guild_id>\d+)/commands", "_h_post_command",
         True),
        ("POST", r"/interactions/(?P<interaction_id>\d+)/(?P<token>[^/]+)/callback", "_h_callback", False),
        ("POST", r"/webhooks/(?P<webhook_id>\d+)/(?P<token>[^/]+)", "_h_followup", False),
        ("PATCH", r"/webhooks/(?P<webhook_id>\d+)/(?P<token>[^/]+)", "_h_modify_webhook", False),
        ("GET", r"/webhooks/(?P<webhook_id>\d+)/(?P<token>[^/]+)/messages/(?P<message_id>@original|\d+)",
         "_h_webhook_message", False),
        ("PATCH", r"/webhooks/(?P<webhook_id>\d+)/(?P<token>[^/]+)/messages/(?P<message_id>@original|\d+)",
         "_h_webhook_message", False),
        ("DELETE", r"/webhooks/(?P<webhook_id>\d+)/(?P<token>[^/]+)/messages/(?P<message_id>@original|\d+)",
         "_h_webhook_message", False),
    ]

    _COMPILED = [(m, re.compile(rx + r"\Z"), h, a) for m, rx, h, a in _ROUTES]

    def _route_template(self, regex: re.Pattern, method: str) -> str:
        t = regex.pattern[:-2]
        t = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: "{" + m.group(1) + "}", t)
        t = t.replace("{token}", "{webhook_token}").replace("{interaction_id}/{webhook_token}",
                                                            "{interaction_id}/{interaction_token}")
        return f"{method} {t}"

    async def _api_entry(self, request: web.Request) -> web.StreamResponse:
        rec = RecordedRequest(index=len(self.requests), method=request.method, path=request.path,
                              query=dict(request.query), headers=dict(request.headers))
        try:
            resp = await self._api_dispatch(request, rec)
        except _HTTPError as exc:
            resp = self._api_response(exc.status, exc.body, exc.headers)
            rec.response = exc.body
        rec.status = resp.status
        self.requests.append(rec)
        self._touch()
        return resp

    def _api_response(self, status: int, body: Any, headers: Optional[Dict[str, str]] = None) -> web.Response:
        h = {"Via": "1.1 google"}
        h.update(headers or {})
        if status == 204 or body is None:
            return web.Response(status=status, headers=h)
        if isinstance(body, (bytes, str)):
            return web.Response(status=status, body=body if isinstance(body, bytes) else body.encode(),
                                headers={**h, "Content-Type": "text/plain"})
        return _json_response(body, status, h)

    async def _api_dispatch(self, request: web.Request, rec: RecordedRequest) -> web.Response:
        if request.match_info["version"] != str(API_VERSION):
            raise _error(404, ErrorCode.GENERAL, "404: Not Found")
        sub = "/" + request.match_info["tail"]
        method = request.method
        found = None
        path_matched = False
        for m, rx, handler, auth in self._COMPILED:
            match = rx.match(sub)
            if match:
                path_matched = True
                if m == method:
                    found = (rx, handler, auth, match.groupdict())
                    break
        if found is None:
            if path_matched:
                raise _error(405, ErrorCode.GENERAL, "405: Method Not Allowed")
            raise _error(404, ErrorCode.GENERAL, "404: Not Found")
        rx, handler, needs_auth, params = found
        # Body first, so that even refused requests are recorded with what they carried.
        body = await self._read_body(request, rec)
        # a held request was received whole (as Discord would have it), whatever its client does next
        await self._wait_if_held(request)
        if needs_auth:
            if request.headers.get("Authorization") != f"Bot {self.token}":
                raise _error(401, ErrorCode.GENERAL, "401: Unauthorized")
            if self.require_user_agent and not request.headers.get("User-Agent", "").startswith("DiscordBot"):
                # Cloudflare in front of Discord refuses clients without a proper User-Agent.
                raise _HTTPError(403, "error code: 1010")
        for rule in self._faults:
            if rule.matches(method, request.path):
                rule.times -= 1
                raise _HTTPError(rule.kw["status"], rule.kw["body"])
        template = self._route_template(rx, method)
        major = params.get("channel_id") or params.get("guild_id") or (
            f"{params.get('webhook_id')}+{params.get('token')}" if params.get("webhook_id") else "")
        bucket_headers = self._take_bucket(template, major, method, request.path)
        status, data = await getattr(self, handler)(request, params, body, rec)
        rec.response = data
        return self._api_response(status, data, bucket_headers)

    def _take_bucket(self, template: str, major: str, method: str, path: str) -> Dict[str, str]:
        now = time.time()
        limit, per = self.bucket_config.get(template, self.bucket_config["default"])
        key = f"{template}:{major}"
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(template, limit, per)
        for rule in self._rate_rules:
            if rule.matches(method, path):
                rule.times -= 1
                raise self._too_many(rule.kw["retry_after"], rule.kw["global_"], rule.kw["scope"], template,
                                     bucket)
        if now >= bucket.reset_at:
            bucket.remaining, bucket.reset_at = bucket.limit, now + bucket.per
        if bucket.remaining <= 0:
            raise self._too_many(round(bucket.reset_at - now, 3), False, "user", template, bucket)
        bucket.remaining -= 1
        return {
            "X-RateLimit-Bucket": bucket.hash,
            "X-RateLimit-Limit": str(bucket.limit),
            "X-RateLimit-Remaining": str(bucket.remaining),
            "X-RateLimit-Reset": f"{bucket.reset_at:.3f}",
            "X-RateLimit-Reset-After": f"{bucket.reset_at - now:.3f}",
        }

    def _too_many(self, retry_after: float, global_: bool, scope: str, template: str,
                  bucket: Optional[_Bucket] = None) -> _HTTPError:
        # https://discord.com/developers/docs/topics/rate-limits#exceeding-a-rate-limit
        now = time.time()
        headers = {
            "Retry-After": str(max(1, math.ceil(retry_after))),
            "X-RateLimit-Scope": scope,
        }
        if global_:
            headers["X-RateLimit-Global"] = "true"
        else:
            b = bucket or _Bucket(template, 1, retry_after)
            headers.update({
                "X-RateLimit-Bucket": b.hash,
                "X-RateLimit-Limit": str(b.limit),
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": f"{now + retry_after:.3f}",
                "X-RateLimit-Reset-After": f"{retry_after:.3f}",
            })
        body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": global_}
        if global_:
            body["code"] = 0
        return _HTTPError(429, body, headers)

    async def _read_body(self, request: web.Request, rec: RecordedRequest) -> Any:
        """JSON or multipart (payload_json + files[n]); anything else counts as no body."""
        if not request.can_read_body:
            return None
        ctype = request.content_type
        if ctype == "application/json":
            raw = await request.read()
            try:
                rec.json = json.loads(raw) if raw else None
            except ValueError:
                raise _error(400, ErrorCode.INVALID_JSON, "The request body contains invalid JSON.")
            return rec.json
        if ctype == "multipart/form-data":
            reader = await request.multipart()
            payload: Any = None
            while True:
                part = await reader.next()
                if part is None:
                    break
                data = await part.read(decode=False)  # type: ignore[union-attr]
                name = part.name or ""  # type: ignore[union-attr]
                if name == "payload_json":
                    try:
                        payload = json.loads(data)
                    except ValueError:
                        raise _error(400, ErrorCode.INVALID_JSON, "The request body contains invalid JSON.")
                elif part.filename is not None:  # type: ignore[union-attr]
                    rec.files.append(RecordedFile(name, part.filename,  # type: ignore[union-attr]
                                                  part.headers.get("Content-Type"), bytes(data)))  # type: ignore
            rec.json = payload
            return payload if payload is not None else {}
        rec.raw = await request.read()
        return None

    async def _h_me(self, request, params, body, rec):
        return 200, self._me()

    async def _h_user(self, request, params, body, rec):
        user = self.users.get(params["user_id"])
        if user is None:
            raise _error(404, ErrorCode.UNKNOWN_USER, "Unknown User")
        return 200, user

    async def _h_get_member(self, request, params, body, rec):
        # https://discord.com/developers/docs/resources/guild#get-guild-member: a guild member
        # object, with its user
        guild = self.guilds.get(params["guild_id"])
        if guild is None:
            raise _error(404, ErrorCode.UNKNOWN_GUILD, "Unknown Guild")
        member = guild["members"].get(params["user_id"])
        if member is None:
            raise _error(404, ErrorCode.UNKNOWN_MEMBER, "Unknown Member")
        return 200, member

    async def _h_create_dm(self, request, params, body, rec):
        rid = str((body or {}).get("recipient_id", ""))
        user = self.users.get(rid)
        if user is None:
            raise _form_error(["recipient_id"], "NUMBER_TYPE_COERCE", f"Value \"{rid}\" is not snowflake.")
        return 200, self.add_dm_channel(user)

    async def _h_application(self, request, params, body, rec):
        owner = self.user
        return 200, {
            "id": self.application_id,
            "name": self.bot_user["username"],
            "icon": None,
            "description": "Confab test application",
            "summary": "",
            "type": None,
            "is_monetized": False,
            "is_verified": False,
            "is_discoverable": False,
            "bot_public": True,
            "bot_require_code_grant": False,
            "verify_key": hashlib.sha256(self.application_id.encode()).hexdigest(),
            "flags": self._application_flags(),
            "hook": True,
            "redirect_uris": [],
            "interactions_endpoint_url": None,
            "role_connections_verification_url": None,
            "owner": owner,
            "team": None,
            "approximate_guild_count": len(self.guilds),
            "approximate_user_install_count": 0,
            "tags": [],
            "install_params": {"scopes": ["bot", "applications.commands"], "permissions": str(BOT_PERMISSIONS)},
            "integration_types_config": {"0": {"oauth2_install_params": {
                "scopes": ["bot", "applications.commands"], "permissions": str(BOT_PERMISSIONS)}}, "1": {}},
            "bot": self.bot_user,
        }

    async def _h_gateway(self, request, params, body, rec):
        return 200, {"url": self.gateway_url}

    async def _h_gateway_bot(self, request, params, body, rec):
        return 200, {"url": self.gateway_url, "shards": 1, "session_start_limit": {
            "total": 1000, "remaining": 1000 - self.identify_count, "reset_after": 86400000, "max_concurrency": 1}}

    async def _h_get_channel(self, request, params, body, rec):
        return 200, self._channel_or_404(params["channel_id"])
