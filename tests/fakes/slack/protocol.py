"""What every surface of the Slack fake shares: Slack's error answer, the record of a request,
the fixtures payloads are built from, ids, and multipart bodies."""

from __future__ import annotations

import json
import secrets
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

FIXTURES_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "slack"


def load_fixture(name: str) -> dict:
    """Loads tests/fixtures/slack/<name>.json without its "_source" note (and any other "_" key)."""
    if not name.endswith(".json"):
        name += ".json"
    data = json.loads((FIXTURES_DIR / name).read_text(encoding="utf-8"))
    return {k: v for k, v in data.items() if not k.startswith("_")}


def _rand_id(prefix: str, n: int = 10) -> str:
    alphabet = string.ascii_uppercase + string.digits
    return prefix + "".join(secrets.choice(alphabet) for _ in range(n))


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    return str(value).strip().lower() in ("1", "true", "yes")


class SlackApiFailure(Exception):
    """Raised inside a handler to answer {"ok": false, "error": ...}."""

    def __init__(self, error: str, *messages: str, status: int = 200, **extra: Any):
        super().__init__(error)
        self.error = error
        self.messages = list(messages)
        self.status = status
        self.extra = extra


@dataclass
class Call:
    """One request the fake received."""

    method: str  # Web API method name, or "upload", "files.download", "response_url"
    params: dict
    headers: dict
    time: float
    http_method: str = "POST"
    path: str = ""
    status: int = 200
    response: Any = None
    body: bytes = b""
    content_type: str = ""

    @property
    def ok(self) -> bool:
        if isinstance(self.response, dict):
            return bool(self.response.get("ok"))
        return 200 <= self.status < 300

    @property
    def error(self) -> Optional[str]:
        if isinstance(self.response, dict):
            return self.response.get("error")
        return None


def _parse_multipart(content_type: str, raw: bytes) -> list[tuple[str, Optional[str], bytes]]:
    """(name, filename, bytes) of each part of a multipart/form-data body."""
    import email.parser
    import email.policy

    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\nMIME-Version: 1.0\r\n\r\n" + raw)
    out = []
    if not msg.is_multipart():
        raise SlackApiFailure("invalid_form_data")
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        filename = part.get_param("filename", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        out.append((str(name or ""), str(filename) if filename else None, payload))
    return out
