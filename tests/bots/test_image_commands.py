"""/imagine and questions about attached images, through the shared command set with a
recording Reply (what every platform implements) and the real engine."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
import pytest_asyncio

from bots.common.commands import Commands, Request
from bots.common.image_commands import (
    ImagineSpec,
    looks_like_image,
    parse_imagine,
    register_commands,
    reroll,
    run_imagine,
)
from engine import Origin, UserError
from engine.messages import OCR_ONLY_NOTE
from engine.runtime.engine import Engine
from tests.conftest import CHAT_MODEL, make_settings, requires_chat_model
from tests.models.tiny_diffusers import text_png, tiny_sd

pytest.importorskip("diffusers")
pytestmark = pytest.mark.asyncio(loop_scope="module")


class RecordingReply:
    """The Reply protocol, recording what a platform would show."""

    def __init__(self, cancel_engine=None):
        self.messages: dict[int, list[str]] = {}     # ref -> every text it showed
        self.files: list[tuple[str, bytes, str]] = []
        self.streamed = ""
        self.controls: list[tuple[str, ImagineSpec, bool]] = []
        self.cancel_engine = cancel_engine
        self.cancelled = False

    async def say(self, text):
        ref = len(self.messages)
        self.messages[ref] = [text]
        return ref

    async def update(self, ref, text):
        self.messages[ref].append(text)
        if self.cancel_engine and "step " in text and not self.cancelled:   # Cancel pressed
            self.cancelled = True
            await self.cancel_engine.cancel(self.controls[0][0])

    async def private(self, text):
        return await self.say(text)

    async def stream(self, chunks, status=""):
        async for c in chunks:
            self.streamed += c
        return self.streamed

    async def send_file(self, data, filename, title="", voice=False, duration_s=0.0):
        self.files.append((filename, data, title))

    async def image_controls(self, ref, job_id, spec, done):
        self.controls.append((job_id, spec, done))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cmds(tmp_path_factory, shared_models_dir):
    settings = make_settings(tmp_path_factory.mktemp("bots-images"), shared_models_dir, threads=2,
                             max_image_side=256, max_image_steps=40, max_images=2,
                             default_chat_model=CHAT_MODEL, context_tokens=2048, max_tokens=32)
    engine = Engine(settings, gpu_total=None)
    engine.registry.add(tiny_sd(), name="tiny-sd")
    engine.refresh_models()
    await engine.start(resume=False)
    commands = Commands(engine)
    register_commands(commands)
    yield commands
    await engine.close()


def request(text, attachments=()):
    return Request(Origin(platform="test", user="bob", channel="C1"), "test:bob", text,
                   list(attachments), history=[])


async def test_parse_imagine_options():
    spec = parse_imagine("a red fox --seed 7 --steps 4 --size 128x64 --n 2")
    assert spec == ImagineSpec("a red fox", 7, 4, 128, 64, 2)
    assert parse_imagine("just words").seed is None
    with pytest.raises(UserError):
        parse_imagine("--seed 3")
    with pytest.raises(UserError):
        parse_imagine("a cat --steps many")


async def test_imagine_shows_queue_progress_then_the_image(cmds):
    reply = RecordingReply()
    await asyncio.wait_for(cmds.handle(request("/imagine a lighthouse --steps 3 --seed 42"), reply), 60)
    shown = reply.messages[0]
    assert shown[0].startswith("🎨 Queued “a lighthouse”")
    assert any("step 3 of 3" in t for t in shown)
    assert "seed 42" in shown[-1] and "3 steps" in shown[-1] and "64×64" in shown[-1]
    (name, data, title), = reply.files
    assert name == "confab-42.png" and data.startswith(b"\x89PNG") and title == "a lighthouse"
    assert [done for _, _, done in reply.controls] == [False, True]


async def test_reroll_draws_the_same_prompt_with_a_new_seed(cmds):
    reply = RecordingReply()
    first = await asyncio.wait_for(run_imagine(cmds, request(""), reply,
                                               ImagineSpec("a boat", seed=1, steps=1)), 60)
    _, spec, _ = reply.controls[-1]
    assert spec.seed == 1 and len(spec.payload()) < 2000
    again = await asyncio.wait_for(reroll(cmds, request(""), reply, spec.payload()), 60)
    assert again.prompt == "a boat" and again.images[0].seed != first.images[0].seed
    assert len(reply.files) == 2


async def test_cancel_button_stops_the_picture(cmds):
    reply = RecordingReply(cancel_engine=cmds.engine)
    result = await asyncio.wait_for(run_imagine(cmds, request(""), reply,
                                                ImagineSpec("a storm", steps=40)), 60)
    assert result is None and not reply.files
    assert reply.messages[0][-1] == "🛑 Cancelled."
    assert any(" of 40" in t for t in reply.messages[0])


async def test_imagine_over_a_limit_says_which(cmds):
    reply = RecordingReply()
    await cmds.handle(request("/imagine a cat --size 512x512"), reply)
    assert "limit" in reply.messages[0][0] and "256" in reply.messages[0][0]
    assert not reply.files


@dataclass
class Attachment:
    name: str
    mimetype: str
    data: bytes

    @property
    def size(self):
        return len(self.data)

    async def read(self):
        return self.data


async def test_attachments_offered_as_images():
    assert looks_like_image(Attachment("shot.png", "", b""))
    assert looks_like_image(Attachment("blob", "image/jpeg", b""))
    assert not looks_like_image(Attachment("voice.ogg", "audio/ogg", b""))


@requires_chat_model
async def test_a_question_about_an_attached_screenshot(cmds):
    reply = RecordingReply()
    shot = Attachment("error.png", "image/png", text_png(["Error 503: disk full"]))
    await asyncio.wait_for(cmds.handle(request("what went wrong?", [shot]), reply), 60)
    assert reply.streamed.startswith(OCR_ONLY_NOTE) and len(reply.streamed) > len(OCR_ONLY_NOTE)
    history = await cmds.engine.history("test:bob")
    assert history[-2][0] == "user" and "image" in history[-2][1]


@pytest.mark.parametrize("attachment, words, mark", [
    (Attachment("fake.png", "image/png", b"not really a png"), "not an image", "🖼️"),
    (Attachment("cut.png", "image/png", text_png(["x"])[:200]), "damaged", "🖼️"),
    (Attachment("huge.png", "image/png", b"\x89PNG" + bytes(11 * 2**20)), "limit", "✂️"),
])
async def test_bad_attachments_get_clear_words(cmds, attachment, words, mark):
    reply = RecordingReply()
    await cmds.handle(request("what is this?", [attachment]), reply)
    said = " ".join(t for texts in reply.messages.values() for t in texts)
    assert said.startswith(mark) and words in said.lower() and not reply.streamed
