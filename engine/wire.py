"""Typed values across processes: jobs, their events, results and errors as JSON.

The Redis queue carries a job from the front host to a GPU worker, and its events and result
back. A dataclass travels as its class's import path and fields; bytes as base64; an error as its
class, message and data. Only classes from Confab's own packages are rebuilt (never an arbitrary
path from the wire), so a value read from Redis cannot make a process import or call anything else.
"""
from __future__ import annotations

import base64
import dataclasses
import importlib
import json
from typing import Any

from engine.errors import ConfabError

TRUSTED = ("engine.", "models.")
# Where the types of an older Confab lived, so that jobs already queued in Redis by it are
# rebuilt after an upgrade.
MOVED = {"engine.speech": "engine.work.speech", "engine.images": "engine.work.images",
         "engine.embeddings": "engine.work.embeddings", "engine.pipelines": "engine.flows.voice_note",
         "engine.templates": "engine.flows.templates", "engine.audio": "engine.media.audio",
         "engine.imaging": "engine.media.imaging", "engine.engine": "engine.runtime.engine",
         "engine.handle": "engine.runtime.handle", "engine.scheduler": "engine.runtime.scheduler",
         "engine.runners": "engine.work.chat_runner", "engine.backends": "engine.work.chat"}
_T, _B, _E, _TUP = "__type__", "__bytes__", "__error__", "__tuple__"


class WireError(ValueError):
    """A value on the wire that Confab cannot rebuild."""


def trust(prefix: str) -> None:
    """Let this process rebuild types from another package too (a test's or a plug-in's)."""
    global TRUSTED
    if prefix not in TRUSTED:
        TRUSTED = (*TRUSTED, prefix)


def _path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _resolve(path: str) -> type:
    module, _, name = path.partition(":")
    module = MOVED.get(module, module)
    if not module.startswith(TRUSTED):
        raise WireError(f"refusing to rebuild {path}: not one of Confab's types")
    obj: Any = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def to_wire(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {_B: base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, ConfabError):
        data = {k: to_wire(v) for k, v in vars(value).items()}
        return {_E: _path(type(value)), "message": value.message, "attrs": data}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: to_wire(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {_T: _path(type(value)), "fields": fields}
    if isinstance(value, dict):
        return {str(k): to_wire(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return {_TUP: [to_wire(v) for v in value]}
    if isinstance(value, list):
        return [to_wire(v) for v in value]
    if hasattr(value, "tolist"):      # numpy arrays and scalars
        return value.tolist()
    return value


def from_wire(value: Any) -> Any:
    if isinstance(value, list):
        return [from_wire(v) for v in value]
    if not isinstance(value, dict):
        return value
    if _B in value:
        return base64.b64decode(value[_B])
    if _TUP in value:
        return tuple(from_wire(v) for v in value[_TUP])
    if _T in value:
        cls = _resolve(value[_T])
        if not dataclasses.is_dataclass(cls):
            raise WireError(f"{value[_T]} is not a dataclass")
        fields = {k: from_wire(v) for k, v in value["fields"].items()}
        init = {f.name for f in dataclasses.fields(cls) if f.init}
        obj = cls(**{k: v for k, v in fields.items() if k in init})
        for k, v in fields.items():
            if k not in init:
                object.__setattr__(obj, k, v)
        return obj
    if _E in value:
        cls = _resolve(value[_E])
        if not (isinstance(cls, type) and issubclass(cls, ConfabError)):
            raise WireError(f"{value[_E]} is not a Confab error")
        err = cls.__new__(cls)
        Exception.__init__(err, value["message"])
        err.__dict__.update({k: from_wire(v) for k, v in value.get("attrs", {}).items()})
        return err
    return {k: from_wire(v) for k, v in value.items()}


def dumps(value: Any) -> str:
    return json.dumps(to_wire(value), separators=(",", ":"))


def loads(text: str | bytes) -> Any:
    return from_wire(json.loads(text))
