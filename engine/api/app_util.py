"""Small helpers shared by the API's route modules."""
from __future__ import annotations

import hashlib

from aiohttp import web


def caller_id(request: web.Request) -> str:
    """A stable, non-secret name for the caller: a hash of its key, or 'anonymous'."""
    from .keys import API_KEY
    key = request.get(API_KEY)
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:12] if key else "anonymous"
