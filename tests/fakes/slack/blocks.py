"""Block Kit validation as Slack applies it to messages and views (limits from Slack's
Block Kit reference); a refusal is a SlackApiFailure with Slack's `[ERROR] ... [json-pointer:...]` lines."""

from __future__ import annotations

import json
from typing import Any

from tests.fakes.slack.protocol import SlackApiFailure

MAX_BLOCKS_MESSAGE = 50
MAX_BLOCKS_VIEW = 100
MAX_SECTION_TEXT = 3000
MAX_HEADER_TEXT = 150
MAX_BUTTON_TEXT = 75

KNOWN_BLOCK_TYPES = {
    "actions", "context", "divider", "file", "header", "image", "input", "markdown",
    "rich_text", "section", "video", "table", "context_actions",
}


def _validate_text_obj(obj: Any, ptr: str, errs: list, *, max_len: int, plain_only: bool = False) -> None:
    if not isinstance(obj, dict):
        errs.append(f"[ERROR] must be an object [json-pointer:{ptr}]")
        return
    t = obj.get("type")
    if t not in ("plain_text", "mrkdwn") or (plain_only and t != "plain_text"):
        wanted = "plain_text" if plain_only else "plain_text or mrkdwn"
        errs.append(f"[ERROR] must be {wanted} [json-pointer:{ptr}/type]")
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        errs.append(f"[ERROR] must be more than 0 characters [json-pointer:{ptr}/text]")
    elif len(text) > max_len:
        errs.append(f"[ERROR] must be less than {max_len + 1} characters [json-pointer:{ptr}/text]")


def validate_blocks(blocks: Any, *, max_blocks: int, error: str = "invalid_blocks") -> list:
    if isinstance(blocks, (str, bytes)):
        try:
            blocks = json.loads(blocks)
        except ValueError:
            raise SlackApiFailure("invalid_blocks_format", "[ERROR] blocks must be a JSON array")
    if not isinstance(blocks, list):
        raise SlackApiFailure("invalid_blocks_format", "[ERROR] blocks must be a JSON array")
    errs: list = []
    if len(blocks) > max_blocks:
        errs.append(f"[ERROR] no more than {max_blocks} items allowed [json-pointer:/blocks]")
    seen_ids: set = set()
    for i, b in enumerate(blocks):
        ptr = f"/blocks/{i}"
        if not isinstance(b, dict):
            errs.append(f"[ERROR] must be an object [json-pointer:{ptr}]")
            continue
        bt = b.get("type")
        if bt not in KNOWN_BLOCK_TYPES:
            errs.append(f"[ERROR] unsupported type: {bt} [json-pointer:{ptr}/type]")
            continue
        bid = b.get("block_id")
        if bid is not None:
            if not isinstance(bid, str) or len(bid) > 255:
                errs.append(f"[ERROR] must be a string of at most 255 characters [json-pointer:{ptr}/block_id]")
            elif bid in seen_ids:
                errs.append(f"[ERROR] duplicate block_id [json-pointer:{ptr}/block_id]")
            seen_ids.add(bid)
        if bt == "section":
            if "text" not in b and "fields" not in b:
                errs.append(f"[ERROR] must provide either text or fields [json-pointer:{ptr}]")
            if "text" in b:
                _validate_text_obj(b["text"], f"{ptr}/text", errs, max_len=MAX_SECTION_TEXT)
            for j, fld in enumerate(b.get("fields", []) or []):
                _validate_text_obj(fld, f"{ptr}/fields/{j}", errs, max_len=2000)
            if len(b.get("fields", []) or []) > 10:
                errs.append(f"[ERROR] no more than 10 items allowed [json-pointer:{ptr}/fields]")
        elif bt == "header":
            _validate_text_obj(b.get("text"), f"{ptr}/text", errs, max_len=MAX_HEADER_TEXT, plain_only=True)
        elif bt == "context":
            els = b.get("elements")
            if not isinstance(els, list) or not 1 <= len(els) <= 10:
                errs.append(f"[ERROR] must have 1 to 10 elements [json-pointer:{ptr}/elements]")
        elif bt == "actions":
            els = b.get("elements")
            if not isinstance(els, list) or not 1 <= len(els) <= 25:
                errs.append(f"[ERROR] must have 1 to 25 elements [json-pointer:{ptr}/elements]")
                continue
            action_ids: set = set()
            for j, el in enumerate(els):
                eptr = f"{ptr}/elements/{j}"
                if not isinstance(el, dict) or "type" not in el:
                    errs.append(f"[ERROR] must be an element object [json-pointer:{eptr}]")
                    continue
                aid = el.get("action_id")
                if aid is not None:
                    if aid in action_ids:
                        errs.append(f"[ERROR] duplicate action_id [json-pointer:{eptr}/action_id]")
                    action_ids.add(aid)
                if el["type"] == "button":
                    _validate_text_obj(el.get("text"), f"{eptr}/text", errs, max_len=MAX_BUTTON_TEXT,
                                            plain_only=True)
                    if len(str(el.get("value", ""))) > 2000:
                        errs.append(f"[ERROR] must be less than 2001 characters [json-pointer:{eptr}/value]")
        elif bt == "image":
            if not (b.get("image_url") or b.get("slack_file")):
                errs.append(f"[ERROR] must provide image_url or slack_file [json-pointer:{ptr}]")
            if not b.get("alt_text"):
                errs.append(f"[ERROR] missing required field: alt_text [json-pointer:{ptr}]")
        elif bt == "markdown":
            if not isinstance(b.get("text"), str) or not b["text"]:
                errs.append(f"[ERROR] missing required field: text [json-pointer:{ptr}]")
            elif len(b["text"]) > 12000:
                errs.append(f"[ERROR] must be less than 12001 characters [json-pointer:{ptr}/text]")
        elif bt == "input":
            if "label" not in b or "element" not in b:
                errs.append(f"[ERROR] missing required field: label/element [json-pointer:{ptr}]")
    if errs:
        raise SlackApiFailure(error, *errs)
    return blocks
