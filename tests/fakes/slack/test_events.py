"""The Slack fake's event builders against the shapes Slack documents."""

from __future__ import annotations

import json

import pytest

from tests.fakes.slack import SlackFake
from tests.fakes.slack.conftest import PNG
from tests.fakes.slack.protocol import FIXTURES_DIR

pytestmark = pytest.mark.timeout(30)


@pytest.mark.asyncio
async def test_event_builders_have_slacks_shapes(fake: SlackFake):
    mention, message = fake.mention_pair("<@UBOT> what is up?", user="U2", channel="C1")
    assert mention["type"] == "app_mention" and message["type"] == "message"
    assert mention["ts"] == message["ts"] == mention["event_ts"]
    assert "channel_type" not in mention and message["channel_type"] == "channel"
    assert mention["blocks"][0]["elements"][0]["elements"][0] == {"type": "user", "user_id": "UBOT"}
    body = fake.events_api(mention)
    assert body["type"] == "event_callback" and body["authorizations"][0]["user_id"] == "UBOT"
    assert body["team_id"] == "T1" and body["api_app_id"] == fake.app_id and body["event_id"].startswith("Ev")

    dm = fake.im_event("hi", user="U1")
    assert dm["channel_type"] == "im" and dm["channel"].startswith("D")

    clip = fake.audio_clip_event(b"\x1aE\xdf\xa3webm", mimetype="audio/webm", duration_ms=2500, channel="C1")
    f = clip["files"][0]
    assert clip["subtype"] == "file_share" and f["subtype"] == "slack_audio"
    assert f["mimetype"] == "audio/webm" and f["filetype"] == "webm" and f["duration_ms"] == 2500
    assert len(f["audio_wave_samples"]) == 100 and f["url_private_download"].startswith(fake.base_url)
    mp4 = fake.audio_clip_file(b"....ftypM4A ", mimetype="audio/mp4")
    assert mp4["mimetype"] == "audio/mp4" and mp4["filetype"] == "m4a"

    img = fake.file_share_event([fake.image_file(PNG)], text="what is this?")
    assert img["subtype"] == "file_share" and img["files"][0]["mimetype"] == "image/png"

    bot = fake.bot_message_event("beep")
    assert bot["subtype"] == "bot_message" and "user" not in bot

    slash = fake.slash_commands("/ask", "why?")
    assert all(isinstance(v, str) for v in slash.values())
    assert slash["response_url"].startswith(fake.base_url) and slash["channel_name"] == "general"

    for path in FIXTURES_DIR.glob("*.json"):
        assert json.loads(path.read_text())["_source"].startswith("https://api.slack.com/"), path.name
