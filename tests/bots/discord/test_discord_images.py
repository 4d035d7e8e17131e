"""Pictures on Discord end to end: `/imagine` (queued status, "step k of N" by editing the
message, the picture as a file, Cancel and Re-roll buttons) with a tiny random-weight diffusers
pipeline of the real architecture, loaded through Confab's own path; and a screenshot with a
question, answered from the text OCR read in it (no vision model here) by the real SmolLM2.
The real discord.py client runs against the strict loopback fake, as in test_discord_adapter."""
from __future__ import annotations

import io
import time

import pytest
import pytest_asyncio

from engine.messages import OCR_ONLY_NOTE
from tests.bots.discord.rig import T, restart_adapter, running_rig
from tests.conftest import CHAT_MODEL, requires_chat_model

pytest.importorskip("diffusers")
pytestmark = [requires_chat_model, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(180)]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def rig(tmp_path_factory, shared_models_dir):
    from bots.common import image_commands
    from tests.models.tiny_diffusers import tiny_sd

    def register_tiny_sd(engine):
        engine.registry.add(tiny_sd(), name="tiny-sd")
        engine.refresh_models()

    async with running_rig(tmp_path_factory.mktemp("discord-images"), shared_models_dir,
                           register=(image_commands.register_commands,), prepare=register_tiny_sd,
                           default_chat_model=CHAT_MODEL, max_image_side=256, max_image_steps=40,
                           max_images=2) as rig:
        yield rig


def png_size(data: bytes) -> tuple[int, int]:
    from PIL import Image
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "PNG"
        return img.size


async def imagine(rig, prompt: str) -> tuple[dict, dict]:
    """Dispatch /imagine; returns (the interaction payload, its status message once posted)."""
    fake = rig.fake
    payload = fake.interaction_command("imagine", {"prompt": prompt})
    await fake.dispatch("INTERACTION_CREATE", payload)
    cb = await rig.acked(payload)
    assert cb.status == 200 and cb.json == {"type": 5}          # deferred at once, in public
    await fake.wait_for("POST", f"/webhooks/{fake.application_id}/{payload['token']}", timeout=T)
    return payload, fake.messages[fake.interaction_state(payload).original_message_id]


def edits_of(rig, message_id: str) -> list[str]:
    return [r.json["content"] for r in rig.fake.find("PATCH", f"/messages/{message_id}", status=200)
            if "content" in (r.json or {})]


def pictures_after(rig, payload: dict) -> list:
    """The files sent as follow-ups of an interaction."""
    return [f for r in rig.fake.find("POST", f"/webhooks/{rig.fake.application_id}/{payload['token']}", status=200)
            for f in r.files]


async def test_imagine_shows_queue_progress_then_the_picture_and_a_reroll_button(rig):
    fake = rig.fake
    payload, status = await imagine(rig, "a lighthouse --steps 3 --seed 42")
    assert status["content"].startswith("🎨 Queued “a lighthouse”")
    mid = status["id"]
    await rig.until(lambda: any(c.startswith("confab:reroll:job_") for c in rig.components(mid)), "the Re-roll button")
    shown = edits_of(rig, mid)
    assert any("step 3 of 3" in t for t in shown), shown
    final = fake.messages[mid]["content"]
    assert "seed 42" in final and "3 steps" in final and "64×64" in final
    (picture,) = pictures_after(rig, payload)
    assert picture.filename == "confab-42.png" and png_size(picture.data) == (64, 64)
    (button,) = rig.components(mid)
    job_id = button.rsplit(":", 1)[1]
    assert rig.engine.handle(job_id).status == "done"

    # Re-roll: the same request with another seed, in a message of its own.
    click = fake.interaction_button(button, fake.messages[mid])
    await fake.dispatch("INTERACTION_CREATE", click)
    cb = await rig.acked(click)
    assert cb.json == {"type": 5}
    await fake.wait_for("POST", f"/webhooks/{fake.application_id}/{click['token']}", timeout=T)
    again = fake.interaction_state(click).original_message_id
    assert again != mid and fake.messages[again]["content"].startswith("🎨 Queued “a lighthouse”")
    await rig.until(lambda: any(c.startswith("confab:reroll:") for c in rig.components(again)), "the re-rolled picture")
    (second,) = pictures_after(rig, click)
    assert second.filename != picture.filename and png_size(second.data) == (64, 64)
    assert "3 steps" in fake.messages[again]["content"]
    new_job = rig.components(again)[0].rsplit(":", 1)[1]
    assert rig.engine.handle(new_job).job.origin.user == fake.user["id"]


async def test_cancel_button_stops_the_picture(rig):
    fake = rig.fake
    payload, status = await imagine(rig, "a storm at sea --steps 40")
    mid = status["id"]
    await rig.until(lambda: any(c.startswith("confab:cancel:job_") for c in rig.components(mid)), "the Cancel button")
    (button,) = rig.components(mid)
    job_id = button.rsplit(":", 1)[1]
    click = fake.interaction_button(button, fake.messages[mid])
    await fake.dispatch("INTERACTION_CREATE", click)
    await fake.wait_for("POST", f"/webhooks/{fake.application_id}/{click['token']}", timeout=10)
    assert fake.messages[fake.interaction_state(click).original_message_id]["content"].startswith("🛑 Cancelled")
    await rig.until(lambda: fake.messages[mid]["content"].startswith("🛑"), "the status to say cancelled")
    await rig.until(lambda: not rig.components(mid), "the Cancel button to go")
    assert rig.engine.handle(job_id).status == "cancelled"
    assert not pictures_after(rig, payload)


async def test_a_screenshot_with_a_question_is_answered_from_its_text(rig):
    from tests.models.tiny_diffusers import text_png
    fake = rig.fake
    shot = text_png(["Error 503: disk full"])
    message = fake.message_create_image(shot, filename="error.png", content="what went wrong?")
    await fake.dispatch("MESSAGE_CREATE", message)
    reply = await rig.bot_reply_to(message["id"], timeout=T)
    final = await rig.answered(reply["id"])
    assert final["content"].startswith(OCR_ONLY_NOTE.strip()) and len(final["content"]) > len(OCR_ONLY_NOTE)
    (job,) = [h for h in rig.jobs() if h.job.messages[-1].content.startswith("what went wrong?")]
    context = job.job.messages[-1].content
    assert "503" in context and "disk full" in context.lower()          # what OCR read, given to the model


async def test_a_file_that_is_not_an_image_gets_clear_words(rig):
    fake = rig.fake
    message = fake.message_create_image(b"not really a png", filename="fake.png", content_type="image/png",
                                        content="what is this?")
    await fake.dispatch("MESSAGE_CREATE", message)
    reply = await rig.bot_reply_to(message["id"], timeout=T)
    await rig.until(lambda: fake.messages[reply["id"]]["content"] != "⏳ …", "the refusal")
    assert "not an image" in fake.messages[reply["id"]]["content"].lower()


async def test_a_reroll_kept_before_its_defer_is_drawn_after_a_restart(rig):
    """A Re-roll click is kept in the store before its defer. The adapter stops while the defer
    is on its way (the fake holds it, then lets it through: Discord heard it), before any job;
    the next adapter draws the picture, once, as the click's answer."""
    fake = rig.fake
    payload, status = await imagine(rig, "a lighthouse --steps 3")
    mid = status["id"]
    await rig.until(lambda: any(c.startswith("confab:reroll:job_") for c in rig.components(mid)), "the Re-roll button")
    (button,) = rig.components(mid)
    click = fake.interaction_button(button, fake.messages[mid])
    callback = f"/api/v10/interactions/{click['id']}/"
    fake.hold(callback, method="POST")
    await fake.dispatch("INTERACTION_CREATE", click)
    await rig.until(lambda: any(click["id"] in h for h in fake.held), "the defer held")
    await restart_adapter(rig, meanwhile=lambda: fake.release(callback, method="POST"))
    await rig.until(lambda: pictures_after(rig, click), "the re-rolled picture")
    again = fake.interaction_state(click).original_message_id
    await rig.until(lambda: any(c.startswith("confab:reroll:") for c in rig.components(again)), "its Re-roll button")
    await rig.until(lambda: not rig.engine.active_jobs(), "the engine to be idle")
    assert len(pictures_after(rig, click)) == 1 and fake.messages[again]["content"].startswith("🎨")
    assert await rig.engine.open_events("discord", time.time() + 1) == []
