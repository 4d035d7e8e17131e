"""Tool calls for every chat model, whatever its chat template.

A model whose template knows tools gets them from llama.cpp's server as they are (it parses
each family's call format, and constrains required calls with a grammar). For a model whose
template has none (SmolLM2's, for one), llama.cpp would drop the tools and answer in prose; Confab
describes the tools in the system message instead and constrains the answer with a JSON schema:
either a call (or several) whose arguments match the function's parameters, or, when the choice
is `auto`, a plain answer. The model's JSON is turned back into OpenAI's `tool_calls`.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from engine.safety import safe_json


@dataclass
class Emulated:
    """The payload changes for a template without tools, and how to read the answer back."""
    system: str
    schema: dict
    allow_answer: bool


def _function(tool: dict) -> dict:
    return tool.get("function") or {}


def emulate(tools: list[dict], tool_choice, parallel: bool = True) -> Emulated | None:
    """None when no call can come back (`tool_choice` "none")."""
    if tool_choice == "none":
        return None
    named = tool_choice.get("function", {}).get("name") if isinstance(tool_choice, dict) else None
    chosen = [t for t in tools if not named or _function(t).get("name") == named]
    calls = []
    for tool in chosen:
        fn = _function(tool)
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        calls.append({"type": "object", "properties": {"name": {"const": fn["name"]}, "arguments": params},
                      "required": ["name", "arguments"]})
    # a small model repeats a call until its tokens run out: at most one call per function
    call_list = {"type": "array", "items": calls[0] if len(calls) == 1 else {"anyOf": calls},
                 "minItems": 1, "maxItems": 1 if not parallel or named else len(calls)}
    with_calls = {"type": "object", "properties": {"tool_calls": call_list}, "required": ["tool_calls"]}
    allow_answer = tool_choice in (None, "auto")
    schema = with_calls if not allow_answer else {"anyOf": [
        with_calls,
        {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}]}
    lines = ["You can call these functions:"]
    for tool in chosen:
        fn = _function(tool)
        lines.append(f"- {fn['name']}: {fn.get('description', '')} Parameters (JSON schema): "
                     f"{json.dumps(fn.get('parameters') or {})}")
    if allow_answer:
        lines.append('Reply with JSON: {"tool_calls": [{"name": ..., "arguments": {...}}]} to call '
                     'functions, or {"answer": "..."} to answer directly.')
    else:
        lines.append('Reply with JSON: {"tool_calls": [{"name": ..., "arguments": {...}}]}.')
    return Emulated("\n".join(lines), schema, allow_answer)


class Unfinished(ValueError):
    """The constrained JSON was cut off (max_tokens) before it closed."""


def read_back(text: str) -> tuple[str | None, list[dict]]:
    """(answer text or None, OpenAI tool_calls) from the constrained JSON."""
    try:
        data = safe_json.loads(text)
    except safe_json.TooDeep:
        return text, []
    except ValueError:
        raise Unfinished(text) from None
    if not isinstance(data, dict):
        return text, []
    if isinstance(data.get("tool_calls"), list):
        calls = []
        for call in data["tool_calls"]:
            if isinstance(call, dict) and isinstance(call.get("name"), str):
                calls.append({"id": "call_" + uuid.uuid4().hex[:24], "type": "function",
                              "function": {"name": call["name"],
                                           "arguments": json.dumps(call.get("arguments") or {})}})
        return None, calls
    if isinstance(data.get("answer"), str):
        return data["answer"], []
    return text, []
