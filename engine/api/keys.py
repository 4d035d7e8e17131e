from aiohttp import web

from ..config import Settings
from ..engine import Engine

ENGINE = web.AppKey("engine", Engine)
SETTINGS = web.AppKey("settings", Settings)
API_KEY = web.RequestKey("api_key", str)
