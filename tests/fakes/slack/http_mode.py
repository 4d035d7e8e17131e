"""HTTP mode of the Slack fake: Slack's v0 request signature and the signed POSTs Slack makes to an
app's request URL (events, slash commands, block actions, url_verification)."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
import urllib.parse
from typing import Any, Optional

import aiohttp

from tests.fakes.slack.protocol import load_fixture

# The example request from https://api.slack.com/authentication/verifying-requests-from-slack
PUBLISHED_SIGNING_VECTOR = {
    "signing_secret": "8f742231b10e8888abcd99yyyzzz85a5",
    "timestamp": "1531420618",
    "body": (
        "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
        "&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
        "&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
        "&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    ),
    "signature": "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
}


def sign(secret: str, timestamp: str | int, body: bytes | str) -> str:
    """Slack's v0 request signature: v0=HMAC-SHA256(secret, "v0:{timestamp}:{body}")."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    base = b"v0:" + str(timestamp).encode("ascii") + b":" + body
    return "v0=" + hmac.new(secret.encode("utf-8"), base, hashlib.sha256).hexdigest()


class HttpMode:
    """Signed requests to an app in HTTP mode (mixed into SlackFake)."""

    def sign_headers(self, body: bytes, timestamp: Optional[int | str] = None,
                     secret: Optional[str] = None) -> dict:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        return {
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": sign(secret if secret is not None else self.signing_secret, ts, body),
        }

    async def signed_post(self, url: str, body: bytes | str, content_type: str, timestamp: Optional[int | str] = None,
                          secret: Optional[str] = None, *, headers: Optional[dict] = None,
                          timeout: float = 10) -> tuple[int, str]:
        """POSTs `body` to a Confab URL signed the way Slack signs (v0 HMAC-SHA256); (status, text)."""
        if isinstance(body, str):
            body = body.encode("utf-8")
        h = {"Content-Type": content_type, "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
             "Accept": "application/json,*/*", "Accept-Encoding": "gzip,deflate"}
        h.update(self.sign_headers(body, timestamp, secret))
        if headers:
            h.update(headers)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s:
            async with s.post(url, data=body, headers=h) as r:
                return r.status, await r.text()

    def event_callback_body(self, event: dict, **kw: Any) -> bytes:
        return json.dumps(self.events_api(event, **kw)).encode("utf-8")

    def url_verification_body(self, challenge: Optional[str] = None) -> bytes:
        body = load_fixture("url_verification")
        body["token"] = self.verification_token
        body["challenge"] = challenge or secrets.token_urlsafe(40)
        return json.dumps(body).encode("utf-8")

    def slash_command_body(self, command: str = "/ask", text: str = "", **kw: Any) -> bytes:
        return urllib.parse.urlencode(self.slash_commands(command, text, **kw)).encode("ascii")

    def block_actions_body(self, *args: Any, **kw: Any) -> bytes:
        payload = self.interactive(*args, **kw)
        return ("payload=" + urllib.parse.quote(json.dumps(payload, separators=(",", ":")), safe="")).encode("ascii")

    JSON = "application/json"

    FORM = "application/x-www-form-urlencoded"
