"""How Confab reaches Slack: the Web API client, the start-up token check, and the two ways
events arrive (Socket Mode, or signed HTTP posts to /slack/events on Confab's own server).
"""
from __future__ import annotations

import json
import logging
import time
from urllib.parse import parse_qsl

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.adapter.socket_mode.async_internals import run_async_bolt_app, send_async_response
from slack_bolt.app.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from engine import ConfigError
from engine.safety import safe_json

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
DEFAULT_API_URL = "https://slack.com/api/"
RATE_LIMIT_RETRIES = 5

_TOKEN_ERRORS = {
    "invalid_auth": "was refused by Slack (invalid_auth): check that it is the Bot User OAuth "
                    "Token (xoxb-…) of this app",
    "not_authed": "is empty",
    "account_inactive": "belongs to a deleted app or a deactivated workspace (account_inactive)",
    "token_revoked": "has been revoked (token_revoked): reinstall the app and copy the new token",
    "token_expired": "has expired (token_expired): turn off token rotation or refresh the token",
    "not_allowed_token_type": "is not a bot token (not_allowed_token_type): use the xoxb-… token, "
                              "not the app-level xapp-… one",
}


def api_url(settings) -> str:
    url = settings.slack_api_url or DEFAULT_API_URL
    return url if url.endswith("/") else url + "/"   # slack-sdk joins URLs: keep the slash


def web_client(settings) -> AsyncWebClient:
    """The Web API client every call goes through, at CONFAB_SLACK_API_URL, retrying 429s after
    Retry-After and dropped connections (slack-sdk's retry handlers are off by default). One
    aiohttp session keeps connections alive across calls: without it slack-sdk opens a new
    connection (and TLS handshake) for every call. Call from a running event loop; close the
    session with `close_web_client`."""
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    return AsyncWebClient(token=settings.slack_bot_token, base_url=api_url(settings), session=session,
                          retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES),
                                          AsyncConnectionErrorRetryHandler(max_retry_count=2)])


async def close_web_client(client: AsyncWebClient) -> None:
    if client.session is not None and not client.session.closed:
        await client.session.close()


def check_settings(settings) -> None:
    token, app_token = settings.slack_bot_token, settings.slack_app_token
    if not token.startswith("xoxb-"):
        raise ConfigError("SLACK_BOT_TOKEN must be the app's Bot User OAuth Token, starting xoxb-.")
    if app_token and not app_token.startswith("xapp-"):
        raise ConfigError("SLACK_APP_TOKEN must be an app-level token starting xapp- (with the "
                          "connections:write scope), or empty for the HTTP Events API.")
    if not app_token and not settings.slack_signing_secret:
        raise ConfigError("Slack needs SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET (events "
                          "posted to /slack/events); neither is set.")


async def who_am_i(client: AsyncWebClient) -> dict:
    """auth.test, at start-up: bolt's async app would otherwise find a bad token only when the
    first event arrives."""
    try:
        r = await client.auth_test()
    except SlackApiError as e:
        error = e.response.get("error", "unknown_error")
        why = _TOKEN_ERRORS.get(error, f"was refused by Slack ({error})")
        raise ConfigError(f"SLACK_BOT_TOKEN {why}.") from None
    except Exception as e:   # no route to Slack: say where we tried
        raise ConfigError(f"Cannot reach Slack's Web API at {client.base_url}: {e}") from None
    return dict(r.data)


class _TimedHandler(AsyncSocketModeHandler):
    """bolt's Socket Mode handler, noting when each envelope came off the socket and when its
    acknowledgement went back (`acks`, bots/common/acks.py)."""

    def __init__(self, app: AsyncApp, app_token: str, acks):
        super().__init__(app, app_token=app_token)
        self.acks = acks
        self.client.on_message_listeners.append(self._received)

    async def _received(self, message) -> None:
        # called as the frame is read, before it is queued for the app
        try:
            envelope_id = json.loads(message.data).get("envelope_id")
        except (ValueError, TypeError, AttributeError):
            return
        if isinstance(envelope_id, str):
            self.acks.received(envelope_id)

    async def handle(self, client, req) -> None:
        started = time.time()
        response = await run_async_bolt_app(self.app, req)
        await send_async_response(client, req, response, started)
        if response.status == 200:            # bolt acknowledges nothing else
            self.acks.acked(req.envelope_id)


class SocketMode:
    """Events over a websocket that Confab opens: no public URL needed."""

    def __init__(self, app: AsyncApp, app_token: str, acks=None):
        self.app, self.app_token = app, app_token
        self.handler = (AsyncSocketModeHandler(app, app_token=app_token) if acks is None
                        else _TimedHandler(app, app_token, acks))

    async def start(self) -> None:
        # The Socket Mode client retries a refused token forever: check it once first (the
        # websocket address it gets is simply not used).
        try:
            await self.app.client.apps_connections_open(app_token=self.app_token)
        except SlackApiError as e:
            error = e.response.get("error", "unknown_error")
            raise ConfigError(f"SLACK_APP_TOKEN was refused by Slack ({error}): use the app-level "
                              "token (xapp-…) with the connections:write scope, and turn on Socket "
                              "Mode in the app's settings.") from None
        await self.handler.connect_async()

    async def stop(self) -> None:
        await self.handler.close_async()


def too_deep(body: str, content_type: str) -> bool:
    """Whether a body posted to /slack/events nests too deeply for bolt to parse: bolt reads a
    JSON body, or a form's `payload` field, with json.loads before it checks the signature."""
    if content_type == "application/json" or body.startswith("{"):
        return safe_json.depth(body) > safe_json.MAX_DEPTH
    return any(safe_json.depth(value) > safe_json.MAX_DEPTH
               for name, value in parse_qsl(body, keep_blank_values=True) if name == "payload")


class HttpEvents:
    """Events, commands and actions POSTed by Slack to /slack/events on Confab's server, each
    checked against the signing secret (and a 5-minute timestamp window) by bolt."""

    def __init__(self, app: AsyncApp, web_app: web.Application | None, path: str = EVENTS_PATH,
                 acks=None):
        self.app, self.path, self.acks = app, path, acks
        if web_app is None:
            raise ConfigError("The Slack HTTP Events API needs Confab's web server; set "
                              "SLACK_APP_TOKEN for Socket Mode instead.")
        web_app.router.add_post(path, self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        started = time.monotonic()            # the request is ours from here: Slack's 3 s run
        if too_deep(await request.text(), request.content_type):
            return web.Response(status=400, text=f"The body nests more than {safe_json.MAX_DEPTH} levels deep.")
        bolt_request = await to_bolt_request(request)
        response = await self.app.async_dispatch(bolt_request)
        if self.acks is not None and response.status == 200:
            body = bolt_request.body if isinstance(bolt_request.body, dict) else {}
            key = body.get("event_id") or body.get("trigger_id") or body.get("type") or "request"
            self.acks.took(str(key), time.monotonic() - started)
        return await to_aiohttp_response(response)

    async def start(self) -> None:
        log.info("Slack events are expected at %s on Confab's server", self.path)

    async def stop(self) -> None:
        pass
