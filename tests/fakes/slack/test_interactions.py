"""The Slack fake's interactivity, driven by the real slack-sdk: trigger ids for views.open."""

from __future__ import annotations

import pytest

from tests.fakes.slack import SlackFake
from tests.fakes.slack.conftest import api_error, client_for

pytestmark = pytest.mark.timeout(30)


@pytest.mark.asyncio
async def test_views_open_needs_a_fresh_trigger(fake: SlackFake):
    client = client_for(fake)
    view = {"type": "modal", "title": {"type": "plain_text", "text": "Ask"},
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}]}
    assert await api_error(client.views_open(trigger_id="1.2.3", view=view)) == "invalid_arguments"
    trigger = fake.slash_commands("/ask", "x")["trigger_id"]
    r = await client.views_open(trigger_id=trigger, view=view)
    assert r["view"]["id"].startswith("V") and fake.views[-1]["user"] == "U1"
    assert await api_error(client.views_open(trigger_id=trigger, view=view)) == "exchanged_trigger_id"
    fake.trigger_ttl = 0.0
    stale = fake.slash_commands("/ask", "x")["trigger_id"]
    assert await api_error(client.views_open(trigger_id=stale, view=view)) == "expired_trigger_id"
