"""JSON from outside Confab, parsed with a bound on how deeply it nests.

Python's parser recurses once per level of arrays and objects: a body nested 10,000 levels deep
raises RecursionError (a server error, not the sender's), and one just under the interpreter's
limit parses but breaks whatever walks it next (json.dumps into the store, the job's wire form).
Every door reads outside JSON through `loads`, which measures the nesting before parsing, in C
speed passes over the bytes, and refuses more than MAX_DEPTH levels. No request Confab serves
needs more than a handful (an OpenAI tool schema, a Slack Block Kit payload).
"""
from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

MAX_DEPTH = 64

_STRINGS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = [0] * 256
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1


class TooDeep(ValueError):
    def __init__(self, limit: int):
        super().__init__(f"arrays and objects nest more than {limit} levels deep")
        self.limit = limit


def depth(raw: bytes | str) -> int:
    """The deepest nesting of arrays and objects in a JSON text (brackets inside strings do not
    count)."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    brackets = _STRINGS.sub(b"", raw).translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def loads(raw: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """json.loads, refusing text nested deeper than `max_depth` with TooDeep (a ValueError, as
    the parser's own errors are)."""
    if depth(raw) > max_depth:
        raise TooDeep(max_depth)
    try:
        return json.loads(raw)
    except RecursionError:       # a max_depth above what this interpreter can parse
        raise TooDeep(max_depth) from None


def nesting(value: Any) -> int:
    """The depth of an already parsed value (a library parsed it: Slack's Socket Mode client,
    discord.py), walked without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            items = item.values()
        elif isinstance(item, (list, tuple)):
            items = item
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in items)
    return deepest


def dumps(value: Any, max_depth: int = MAX_DEPTH) -> str:
    """json.dumps for values from outside that are kept (the store's events): TooDeep rather
    than a RecursionError, and never a text that `loads` would refuse later."""
    if nesting(value) > max_depth:
        raise TooDeep(max_depth)
    return json.dumps(value)
