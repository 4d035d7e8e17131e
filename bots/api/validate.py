"""Reading request bodies: JSON parsing and field checks that answer in the caller's words."""
from __future__ import annotations

import math

from aiohttp import web

from engine.errors import BadRequest, LimitExceeded
from engine.safety import safe_json


async def read_json(request: web.Request) -> dict:
    raw = await request.read()
    if not raw:
        raise BadRequest("The request body is empty; send a JSON object.")
    try:
        body = safe_json.loads(raw)
    except safe_json.TooDeep as e:
        raise BadRequest(f"The request body is refused: its {e}.") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"The request body is not valid JSON: {e}.") from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    return body


def number(body: dict, name: str, default, lo: float, hi: float, integer: bool = False):
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not math.isfinite(value)):
        raise BadRequest(f"'{name}' must be a number.", param=name)
    if integer and not float(value).is_integer():
        raise BadRequest(f"'{name}' must be a whole number.", param=name)
    if not lo <= value <= hi:
        raise BadRequest(f"'{name}' must be between {lo:g} and {hi:g}; got {value:g}.", param=name)
    return int(value) if integer else float(value)


def limited_int(body: dict, names: tuple[str, ...], maximum: int) -> int | None:
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadRequest(f"'{name}' must be a whole number.", param=name)
        if value < 1:
            raise BadRequest(f"'{name}' must be at least 1; got {value}.", param=name)
        if value > maximum:
            raise LimitExceeded(f"'{name}'", value, maximum, "tokens")
        return value
    return None


def string(body: dict, name: str, default: str | None = None, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise BadRequest(f"'{name}' is required.", param=name)
        return default
    if not isinstance(value, str):
        raise BadRequest(f"'{name}' must be a string.", param=name)
    return value
