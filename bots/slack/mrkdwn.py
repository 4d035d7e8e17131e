"""Markdown, as chat models write it, to Slack's mrkdwn.

Slack's dialect: *bold*, _italic_, ~strike~, `code`, ``` blocks (no language tag), <url|text>
links, and &, <, > escaped as entities. Headings become bold lines and list bullets become
"•". Code spans and blocks are left as they are (only escaped).
"""
from __future__ import annotations

import re

_FENCE = re.compile(r"```[^\n`]*\n?(.*?)(?:```|$)", re.S)
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_LINK = re.compile(r"!?\[([^\]\n]+)\]\((https?://[^)\s]+|mailto:[^)\s]+)\)")
_BARE_URL = re.compile(r"<(https?://[^>\s]+)>")
_BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_ITALIC_STAR = re.compile(r"(?<![*\w])\*(?=[^\s*])([^*\n]+?)(?<=\S)\*(?![*\w])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$", re.M)
_BULLET = re.compile(r"^(\s*)[-*+]\s+", re.M)
_RULE = re.compile(r"^\s*([-*_])(\s*\1){2,}\s*$", re.M)

# Slack's own markup that must pass through untouched: <@U123>, <#C123>, <!here>, <url|text>.
_SLACK_TOKEN = re.compile(r"<(?:[@#!][A-Za-z0-9^|._-]+|https?://[^>\s]+(?:\|[^>\n]+)?|mailto:[^>\s]+)>")


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_mrkdwn(markdown: str) -> str:
    kept: list[str] = []

    def keep(s: str) -> str:
        kept.append(s)
        return f"\x00{len(kept) - 1}\x00"

    text = _FENCE.sub(lambda m: keep("```\n" + escape(m.group(1).rstrip("\n")) + "\n```"), markdown)
    text = _INLINE_CODE.sub(lambda m: keep(escape(m.group(0))), text)
    text = _LINK.sub(lambda m: keep(f"<{m.group(2)}|{escape(m.group(1)).replace('|', '¦')}>"), text)
    text = _BARE_URL.sub(lambda m: keep(f"<{m.group(1)}>"), text)
    text = _SLACK_TOKEN.sub(lambda m: keep(m.group(0)), text)
    text = escape(text)
    text = _RULE.sub("──────────", text)
    text = _HEADING.sub(lambda m: keep("*" + m.group(1).strip("*_ ") + "*"), text)
    text = _BULLET.sub(lambda m: m.group(1) + "• ", text)
    text = _ITALIC_STAR.sub(lambda m: keep("_" + m.group(1) + "_"), text)
    text = _BOLD.sub(lambda m: keep("*" + m.group(2) + "*"), text)
    text = _STRIKE.sub(lambda m: "~" + m.group(1) + "~", text)
    while "\x00" in text:
        new = re.sub(r"\x00(\d+)\x00", lambda m: kept[int(m.group(1))], text)
        if new == text:
            break
        text = new
    return text
