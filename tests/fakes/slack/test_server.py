"""The Slack fake's own promise: every wait on it is bounded."""

from __future__ import annotations

import asyncio

import pytest

from tests.fakes.slack import SlackFake

pytestmark = pytest.mark.timeout(30)


@pytest.mark.asyncio
async def test_wait_is_bounded(fake: SlackFake):
    with pytest.raises(asyncio.TimeoutError):
        await fake.wait_for("chat.postMessage", timeout=0.2)
    with pytest.raises(asyncio.TimeoutError):
        await fake.send_envelope("events_api", fake.events_api(fake.message_event("x")), timeout=0.2)
