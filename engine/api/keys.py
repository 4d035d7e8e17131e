from aiohttp import web

from ..config import Settings
from ..engine import Engine

ENGINE = web.AppKey("engine", Engine)
SETTINGS = web.AppKey("settings", Settings)
