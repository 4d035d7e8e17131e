"""Streaming by edits: at most one edit per interval of the given clock, and every piece within
the platform's limit; the pieces together say the whole answer."""
from __future__ import annotations

import pytest

from bots.common.render import ThrottledStream, split_message


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.asyncio
async def test_edits_at_most_once_per_interval_and_pieces_within_the_limit():
    clock, posted, edits = Clock(), {}, []

    async def post(body: str) -> int:
        posted[len(posted)] = body
        return len(posted) - 1

    async def edit(ref: int, body: str) -> None:
        edits.append((clock.now, ref, body))
        posted[ref] = body

    words = [f"word{i} " for i in range(400)]

    async def chunks():
        for w in words:
            clock.now += 0.1          # ten tokens a second
            yield w

    stream = ThrottledStream(post, edit, limit=500, interval=1.0, clock=clock)
    text = await stream.run(chunks())
    assert text == "".join(words)
    throttled = [t for t, _, _ in edits[:-len(posted)]]       # the final render may touch each piece
    assert all(b - a >= 1.0 - 1e-9 for a, b in zip(throttled, throttled[1:]))
    assert len(edits) <= 40 + len(posted)      # 40 s of tokens: one edit a second, then the last
    assert all(len(body) <= 500 for body in posted.values())
    assert " ".join(posted[i] for i in range(len(posted))).split() == text.split()


def test_split_message_respects_the_limit_and_loses_nothing():
    text = ("A paragraph of words. " * 120 + "\n\n") * 5 + "x" * 4500
    for limit in (2000, 3000, 40000):
        pieces = split_message(text, limit)
        assert all(len(p) <= limit for p in pieces)
        assert "".join(pieces).replace(" ", "").replace("\n", "") == text.replace(" ", "").replace("\n", "")
