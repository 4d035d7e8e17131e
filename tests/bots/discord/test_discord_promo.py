"""The writing templates on Discord. /promo: the slots the options leave out are asked in a real
Discord modal (the interaction's first response, type 9), its submission is deferred and
answered with the promotional text written by SmolLM2 from exactly those facts. The fake checks
the modal as Discord does, and builds the submission only from what the modal offered.
/translate: its language option reaches the template typed."""
from __future__ import annotations

import time

import pytest
import pytest_asyncio

from bots import skills
from tests.bots.discord.rig import T, restart_adapter, running_rig
from tests.conftest import requires_chat_model

pytestmark = [requires_chat_model, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(180)]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def rig(tmp_path_factory, shared_models_dir):
    async with running_rig(tmp_path_factory.mktemp("discord-promo"), shared_models_dir,
                           register=(skills.register_commands,)) as rig:
        yield rig


async def test_translate_into_each_language_of_its_option(rig):
    fake = rig.fake
    before = len(rig.jobs("chat"))
    payload = fake.interaction_command("translate", {"text": "Good morning", "language": "fr, de"})
    await fake.dispatch("INTERACTION_CREATE", payload)
    await rig.acked(payload)
    jobs = await rig.until(lambda: rig.jobs("chat")[before:] if len(rig.jobs("chat")) >= before + 2
                           and rig.jobs("chat")[-1].done else None, "both translations")
    prompts = [h.job.messages[-1].content for h in jobs]
    assert "into French" in prompts[0] and "into German" in prompts[1]
    assert all(p.endswith("\n\nGood morning") for p in prompts)
    await rig.handled()


async def test_promo_asks_its_missing_slots_in_a_modal_and_writes_from_them(rig):
    fake = rig.fake
    command = next(c for c in fake.global_commands if c["name"] == "promo")
    options = {o["name"]: o for o in command["options"]}
    assert options["product"]["required"] and [c["value"] for c in options["output"]["choices"]] == \
        ["text", "image", "both"]

    payload = fake.interaction_command("promo", {"product": "Lemonade", "output": "text"})
    await fake.dispatch("INTERACTION_CREATE", payload)
    shown = await rig.acked(payload)
    assert shown.status in (200, 204) and shown.json["type"] == 9         # a modal, not a defer
    modal = shown.json["data"]
    assert modal["custom_id"].startswith("confab_template:promo") and modal["title"] == "/promo"
    inputs = [row["components"][0] for row in modal["components"]]
    assert [i["custom_id"] for i in inputs] == ["size", "container", "price", "store", "setting"]
    assert all(i["type"] == 4 and i["required"] for i in inputs)

    with pytest.raises(ValueError):        # Discord's client does not send a required field empty
        fake.interaction_modal_submit(payload, {"size": "330 ml"})
    submit = fake.interaction_modal_submit(payload, {
        "size": "330 ml", "container": "can", "price": "$1.50", "store": "kiosk", "setting": "beach in summer"})
    await fake.dispatch("INTERACTION_CREATE", submit)
    ack = await rig.acked(submit)
    assert ack.json["type"] == 5
    answer = await fake.wait_for("POST", f"/webhooks/{fake.application_id}/{submit['token']}", timeout=T)
    await rig.answered(answer.response["id"])
    text = fake.messages[answer.response["id"]]["content"]
    assert len(text.strip()) > 10 and "/promo needs" not in text
    job = rig.jobs("chat")[-1].job
    prompt = job.messages[-1].content
    for fact in ("Lemonade", "330 ml", "can", "$1.50", "kiosk", "beach in summer"):
        assert fact in prompt, fact


async def test_promo_with_every_slot_given_needs_no_modal(rig):
    fake = rig.fake
    payload = fake.interaction_command("promo", {
        "product": "Tea", "output": "text", "size": "250 g", "container": "tin", "price": "€4",
        "store": "boutique", "setting": "cosy kitchen"})
    await fake.dispatch("INTERACTION_CREATE", payload)
    ack = await rig.acked(payload)
    assert ack.json["type"] == 5 and fake.interaction_state(payload).modal is None
    answer = await fake.wait_for("POST", f"/webhooks/{fake.application_id}/{payload['token']}", timeout=T)
    await rig.answered(answer.response["id"])
    assert "cosy kitchen" in rig.jobs("chat")[-1].job.messages[-1].content


async def test_a_promo_kept_before_its_defer_is_written_after_a_restart(rig):
    """A template's command is kept in the store before its defer, as a slash command is. The
    adapter stops while the defer is on its way (the fake holds it, then lets it through), before
    any job; the next adapter writes the text, once, as the interaction's answer."""
    fake = rig.fake
    payload = fake.interaction_command("promo", {
        "product": "Cider", "output": "text", "size": "500 ml", "container": "bottle", "price": "£3",
        "store": "farm shop", "setting": "orchard in autumn"})
    callback = f"/api/v10/interactions/{payload['id']}/"
    fake.hold(callback, method="POST")
    await fake.dispatch("INTERACTION_CREATE", payload)
    await rig.until(lambda: any(payload["id"] in h for h in fake.held), "the defer held")
    await restart_adapter(rig, meanwhile=lambda: fake.release(callback, method="POST"))
    answer = await fake.wait_for("POST", f"/webhooks/{fake.application_id}/{payload['token']}", timeout=T)
    await rig.answered(answer.response["id"])
    assert "orchard in autumn" in rig.jobs("chat")[-1].job.messages[-1].content
    state = fake.interaction_state(payload)
    assert state.message_ids == [state.original_message_id]
    assert await rig.engine.open_events("discord", time.time() + 1) == []
