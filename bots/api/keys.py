from aiohttp import web

from engine.config import Settings
from engine.runtime.engine import Engine

ENGINE = web.AppKey("engine", Engine)
SETTINGS = web.AppKey("settings", Settings)
API_KEY = web.RequestKey("api_key", str)
# Routes that read their body as a stream and enforce their own, larger limit (audio uploads).
STREAMED_UPLOADS = web.AppKey("streamed_uploads", set)
# Routes whose JSON body may be larger than CONFAB_MAX_BODY_BYTES: path -> limit(settings).
LARGER_BODIES = web.AppKey("larger_bodies", dict)
