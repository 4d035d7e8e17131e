"""Secrets never reach the logs: a filter on the log handlers that blanks every configured
secret (API keys, platform tokens, signing secrets) and anything shaped like a token, in the
message, its arguments and any traceback. The entry point installs it once, after it configures
logging (libraries only log; they never configure)."""
from __future__ import annotations

import dataclasses
import logging
import re

MASK = "***"
# Shapes of secrets whatever their source: Slack tokens, bearer credentials, Discord bot tokens.
PATTERNS = re.compile(
    r"(xox[abposr]-[A-Za-z0-9-]{6,}|xapp-[A-Za-z0-9-]{6,}"
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/=-]{6,}"
    r"|[MN][A-Za-z\d_-]{23,25}\.[A-Za-z\d_-]{6}\.[A-Za-z\d_-]{27,38})")


def secret_values(*settings) -> list[str]:
    """Every secret the settings hold (fields marked secret: the engine's and each door's),
    longest first."""
    found: set[str] = set()
    for each in settings:
        for f in dataclasses.fields(each):
            if not f.metadata.get("secret"):
                continue
            value = getattr(each, f.name)
            for v in (value if isinstance(value, tuple) else (value,)):
                if isinstance(v, str) and len(v) >= 4:
                    found.add(v)
    return sorted(found, key=len, reverse=True)


def redact(text: str, secrets: list[str]) -> str:
    for s in secrets:
        if s in text:
            text = text.replace(s, MASK)
    return PATTERNS.sub(lambda m: m.group(0).split()[0] + " " + MASK if " " in m.group(0) else MASK, text)


class RedactSecrets(logging.Filter):
    def __init__(self, secrets: list[str]):
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:        # a broken format string is not ours to fix here
            return True
        clean = redact(message, self.secrets)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        return True


def install(*settings, logger: logging.Logger | None = None) -> RedactSecrets:
    """Add the filter to every handler of `logger` (the root logger by default)."""
    target = logger or logging.getLogger()
    flt = RedactSecrets(secret_values(*settings))
    for handler in target.handlers:
        handler.addFilter(flt)
    return flt
