"""The acknowledgement clock the Slack and Discord adapters keep (bots/common/acks.py): receipt
to ack on Confab's own clock, bounded, and a late ack logged."""
from __future__ import annotations

import logging

from bots.common.acks import AckClock


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_receipt_to_ack_on_confabs_clock():
    clock = Clock()
    acks = AckClock("Slack", clock=clock)
    acks.received("E1")
    acks.received("E2")
    clock.now += 0.25
    assert acks.acked("E1").seconds == 0.25
    clock.now += 0.5
    assert acks.acked("E2").seconds == 0.75
    assert acks.acked("E1") is None             # acknowledged once; a second ack is no receipt
    assert acks.acked("never-seen") is None
    assert acks.of("E2").seconds == 0.75 and acks.count == 2
    assert [a.key for a in acks.since(1)] == ["E2"] and acks.since(2) == []


def test_a_late_ack_is_logged(caplog):
    clock = Clock()
    acks = AckClock("Discord", clock=clock)
    acks.received("123")
    clock.now += 3.5
    with caplog.at_level(logging.WARNING, logger="bots.common.acks"):
        assert acks.acked("123").seconds == 3.5
    assert "Discord: acknowledged 123 after 3.5 s" in caplog.text


def test_bounded():
    clock = Clock()
    acks = AckClock("Slack", keep=3, clock=clock)
    for k in range(10):
        acks.received(f"E{k}")
    assert acks.acked("E0") is None             # the oldest receipts were dropped
    for k in range(7, 10):
        acks.acked(f"E{k}")
    acks.took("http", 0.1)
    assert len(acks.acks) == 3 and acks.count == 4
    assert [a.key for a in acks.since(0)] == ["E8", "E9", "http"]    # what is still kept
