"""Cutting text into sentences for speech: all at once, or as a chat answer streams in."""
from __future__ import annotations

import re

_END = re.compile(r"(?<=[.!?…。！？;])[\"')\]]*\s+|\n\s*\n|\n(?=\s*[-*•\d])")
_SOFT = re.compile(r"(?<=[,:;—–])\s+")


def _clean(text: str) -> str:
    # Markdown emphasis, code ticks and headings are not read aloud.
    text = re.sub(r"[*_`#]+", "", text)
    return re.sub(r"\s+", " ", text).strip()


def _cut_long(sentence: str, max_chars: int) -> list[str]:
    """A sentence longer than `max_chars` is cut at commas, then at spaces."""
    out: list[str] = []
    while len(sentence) > max_chars:
        window = sentence[:max_chars]
        cuts = [m.end() for m in _SOFT.finditer(window)]
        cut = cuts[-1] if cuts and cuts[-1] > max_chars // 3 else window.rfind(" ")
        if cut <= 0:
            cut = max_chars
        out.append(sentence[:cut].strip())
        sentence = sentence[cut:].strip()
    if sentence:
        out.append(sentence)
    return out


def split_sentences(text: str, max_chars: int = 250, min_chars: int = 12) -> list[str]:
    """Sentences of at most `max_chars`; fragments shorter than `min_chars` join their neighbour."""
    pieces = [_clean(p) for p in _END.split(text or "")]
    pieces = [p for p in pieces if p and re.search(r"\w", p)]
    merged: list[str] = []
    for p in pieces:
        if merged and (len(merged[-1]) < min_chars) and len(merged[-1]) + len(p) + 1 <= max_chars:
            merged[-1] = f"{merged[-1]} {p}"
        else:
            merged.append(p)
    out: list[str] = []
    for p in merged:
        out.extend(_cut_long(p, max_chars))
    return out


class SentenceBuffer:
    """Feed it streamed text; it hands back each sentence once the next one has begun."""

    def __init__(self, max_chars: int = 250, min_chars: int = 12, first_clause: int = 0):
        """With `first_clause`, the first piece may end at a clause (a comma, colon, dash) once
        it is that many characters long."""
        self.max_chars, self.min_chars = max_chars, min_chars
        self.first_clause = first_clause
        self._text = ""

    def feed(self, chunk: str) -> list[str]:
        self._text += chunk
        if self.first_clause:
            for m in _SOFT.finditer(self._text):
                head = self._text[:m.end()]
                if len(_clean(head)) >= self.first_clause:
                    self.first_clause = 0
                    self._text = self._text[m.end():]
                    return [_clean(head)] + self.feed("")
            if _END.search(self._text):
                self.first_clause = 0
        ends = list(_END.finditer(self._text))
        # keep the last complete boundary; what follows it is still being written
        for m in reversed(ends):
            head = self._text[:m.end()]
            if len(_clean(head)) >= self.min_chars:
                self._text = self._text[m.end():]
                return split_sentences(head, self.max_chars, self.min_chars)
        if len(self._text) > 2 * self.max_chars:
            parts = _cut_long(_clean(self._text), self.max_chars)
            self._text = parts.pop() if parts else ""
            return parts
        return []

    def flush(self) -> list[str]:
        rest, self._text = self._text, ""
        return split_sentences(rest, self.max_chars, self.min_chars)
