"""The Discord fake's payload builders against the fixtures taken from Discord's documentation."""

from __future__ import annotations

import base64
import json
import pathlib

import pytest

from tests.fakes.discord import DiscordFake
from tests.fakes.discord.conftest import OGG, png
from tests.fakes.discord.protocol import MessageFlags, shape_of

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(25)]


FIXTURES = pathlib.Path(__file__).resolve().parents[2] / "fixtures" / "discord"


def builder_payloads(fake: DiscordFake) -> dict:
    fake.global_commands = [fake._command_object(
        {"name": "ask", "description": "Ask", "type": 1,
         "options": [{"type": 3, "name": "question", "description": "q", "required": True}]}, None, None)]
    mention = fake.message_create_mention("what is confab?")
    bot_msg = fake._make_message(fake.channel_id, fake.bot_user, "Pick one",
                                 components=[{"type": 1, "components": [
                                     {"type": 2, "style": 1, "label": "Yes", "custom_id": "yes"}]}])
    question = fake.message_create_guild("how do I reset my password?", channel_id=fake.support_channel_id)
    thread = fake._new_thread(fake.channels[fake.support_channel_id], fake.messages[question["id"]], fake.user,
                              {"name": "reset"})
    in_thread = fake.message_create_guild("thanks, that worked", channel_id=thread["id"])
    modal_for = fake.interaction_command("ask", {"question": "hi"})
    fake.interaction_state(modal_for).modal = {"custom_id": "form", "title": "A form", "components": [
        {"type": 1, "components": [{"type": 4, "custom_id": "name", "label": "Name", "style": 1}]}]}
    return {
        "gateway_thread_create.json": dict(thread, newly_created=True),
        "message_create_in_thread.json": in_thread,
        "interaction_create_modal_submit.json": fake.interaction_modal_submit(modal_for, {"name": "Ada"}),
        "message_create_guild_mention.json": mention,
        "message_create_dm.json": fake.message_create_dm("hi"),
        "message_create_reply.json": fake.message_create_reply("and then?", mention),
        "message_create_voice.json": fake.message_create_voice(OGG, duration_secs=3.2),
        "message_create_image.json": fake.message_create_image(png(), content="what is this?"),
        "interaction_create_command.json": fake.interaction_command("ask", {"question": "hi"}),
        "interaction_create_button.json": fake.interaction_button("yes", bot_msg),
    }


async def test_fixtures_name_their_source_and_match_the_builders(fake):
    files = sorted(FIXTURES.glob("*.json"))
    assert len(files) >= 10, files
    for path in files:
        data = json.loads(path.read_text())
        assert data.get("_source", "").startswith("https://discord.com/developers/docs/"), path.name
    for name, payload in builder_payloads(fake).items():
        fixture = json.loads((FIXTURES / name).read_text())
        assert shape_of(payload) == shape_of(fixture), name


async def test_builder_shapes(fake):
    p = builder_payloads(fake)
    mention = p["message_create_guild_mention.json"]
    assert mention["content"] == f"<@{fake.bot_user_id}> what is confab?"
    assert mention["mentions"][0]["id"] == fake.bot_user_id and mention["guild_id"] == fake.guild_id
    dm = p["message_create_dm.json"]
    assert "guild_id" not in dm and "member" not in dm and dm["channel_type"] == 1
    reply = p["message_create_reply.json"]
    assert reply["type"] == 19 and reply["referenced_message"]["id"] == mention["id"]
    voice = p["message_create_voice.json"]
    (att,) = voice["attachments"]
    assert voice["flags"] == MessageFlags.IS_VOICE_MESSAGE and voice["content"] == ""
    assert att["content_type"] == "audio/ogg" and att["duration_secs"] == 3.2
    assert 0 < len(base64.b64decode(att["waveform"])) <= 256
    image = p["message_create_image.json"]["attachments"][0]
    assert (image["width"], image["height"]) == (3, 2) and image["content_type"] == "image/png"
    cmd = p["interaction_create_command.json"]
    for key in ("id", "type", "token", "version", "application_id", "attachment_size_limit", "data",
                "guild_id", "channel_id", "channel", "member", "app_permissions", "locale", "entitlements",
                "authorizing_integration_owners", "context"):
        assert key in cmd, key
    assert cmd["data"]["options"] == [{"name": "question", "type": 3, "value": "hi"}]
    assert cmd["data"]["id"] == fake.global_commands[0]["id"]
    button = p["interaction_create_button.json"]
    assert button["type"] == 3 and button["data"]["custom_id"] == "yes" and button["message"]["id"]
    with pytest.raises(ValueError):
        fake.interaction_command("nope")
    with pytest.raises(ValueError):
        fake.interaction_command("ask", {})  # required option missing
