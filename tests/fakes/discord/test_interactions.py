"""Interactions on the Discord fake with the real discord.py client: slash commands, components
and modals."""

from __future__ import annotations

import asyncio

import aiohttp
import discord
import discord.gateway
import discord.http
import pytest

from tests.fakes.discord.conftest import T, next_item, running
from tests.fakes.discord.protocol import ErrorCode, MessageFlags

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(25)]


async def test_client_commands_interactions_and_components(fake):
    async with running(fake) as bot:
        synced = await bot.tree.sync()
        put = await fake.wait_for("PUT", f"/applications/{fake.application_id}/commands", timeout=T)
        assert [c["name"] for c in put.json] == ["ask"] and [c.name for c in synced] == ["ask"]
        assert fake.global_commands[0]["options"][0]["name"] == "question"

        # Slash command: defer, then a follow-up (which fills in the deferred message).
        payload = fake.interaction_command("ask", {"question": "why?"})
        await fake.dispatch("INTERACTION_CREATE", payload)
        interaction, followup = await next_item(bot.answered, "the /ask handler")
        assert interaction.id == int(payload["id"]) and interaction.channel.id == int(fake.channel_id)
        cb = await fake.wait_for("POST", f"/interactions/{payload['id']}/", timeout=T)
        assert cb.json == {"type": 5} and cb.query.get("with_response") == "1"
        assert cb.response["interaction"]["response_message_loading"] is True
        hook = await fake.wait_for("POST", f"/webhooks/{fake.application_id}/{payload['token']}", timeout=T)
        assert hook.json["content"] == "answer to: why?" and hook.status == 200
        state = fake.interaction_state(payload)
        original = fake.messages[state.original_message_id]
        assert original["content"] == "answer to: why?" and not original["flags"] & MessageFlags.LOADING
        assert followup.id == int(state.original_message_id)
        # Editing the original response afterwards.
        await interaction.edit_original_response(content="better answer")
        await fake.wait_for("PATCH", "/messages/@original", timeout=T)
        assert fake.messages[state.original_message_id]["content"] == "better answer"

        # A button on a message the bot sent, answered by editing that message (type 7).
        clicked = asyncio.Event()

        class Confirm(discord.ui.View):
            @discord.ui.button(label="Yes", custom_id="confirm-yes")
            async def yes(self, inter: discord.Interaction, button: discord.ui.Button) -> None:
                await inter.response.edit_message(content="confirmed", view=None)
                clicked.set()

        channel = bot.get_channel(int(fake.support_channel_id))
        sent = await channel.send("Proceed?", view=Confirm(timeout=None))
        await fake.dispatch("INTERACTION_CREATE", fake.interaction_button("confirm-yes", fake.messages[str(sent.id)]))
        await asyncio.wait_for(clicked.wait(), T)
        cb = await fake.wait_for("POST", "/callback", predicate=lambda r: r.json["type"] == 7, timeout=T)
        assert cb.status == 200 and fake.messages[str(sent.id)]["content"] == "confirmed"
        assert fake.messages[str(sent.id)]["components"] == []


async def test_modals_are_checked_as_discord_checks_them(fake):
    # https://discord.com/developers/docs/interactions/receiving-and-responding#interaction-response-object-modal
    fake.global_commands = [fake._command_object({"name": "ask", "description": "Ask"}, None, None)]

    def text_input(cid, **kw):
        return {"type": 1, "components": [dict({"type": 4, "custom_id": cid, "label": cid.title(), "style": 1}, **kw)]}

    good = {"custom_id": "form", "title": "A form", "components": [text_input("name", required=True, max_length=20)]}
    bad = [
        dict(good, title="x" * 46),
        dict(good, custom_id="x" * 101),
        dict(good, components=[]),
        dict(good, components=[text_input(f"f{i}") for i in range(6)]),
        dict(good, components=[text_input("a", style=3)]),
        dict(good, components=[{"type": 1, "components": [{"type": 4, "custom_id": "a", "style": 1}]}]),  # no label
        dict(good, components=[text_input("a"), text_input("a")]),
        dict(good, components=[text_input("a", min_length=5, max_length=2)]),
        dict(good, components=[{"type": 2, "custom_id": "b", "style": 1, "label": "button"}]),
    ]
    async with aiohttp.ClientSession() as http:
        for data in bad:
            inter = fake.interaction_command("ask")
            url = f"{fake.api_base}/interactions/{inter['id']}/{inter['token']}/callback"
            async with http.post(url, json={"type": 9, "data": data}) as r:
                assert r.status == 400 and (await r.json())["code"] == ErrorCode.INVALID_FORM_BODY, data
        inter = fake.interaction_command("ask")
        url = f"{fake.api_base}/interactions/{inter['id']}/{inter['token']}/callback"
        async with http.post(url, json={"type": 9, "data": good}) as r:
            assert r.status == 204
    with pytest.raises(ValueError):
        fake.interaction_modal_submit(inter, {})                       # required, left empty
    with pytest.raises(ValueError):
        fake.interaction_modal_submit(inter, {"name": "x" * 21})       # over max_length
    with pytest.raises(ValueError):
        fake.interaction_modal_submit(inter, {"name": "Ada", "age": "36"})
    submit = fake.interaction_modal_submit(inter, {"name": "Ada"})
    assert submit["type"] == 5 and submit["data"]["custom_id"] == "form"
    assert submit["data"]["components"][0]["components"][0] == {"type": 4, "id": 0, "custom_id": "name", "value": "Ada"}
