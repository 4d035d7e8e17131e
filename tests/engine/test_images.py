"""Image jobs through the real engine: the tiny diffusers pipeline registered like
`confab models add`, progress events, cancel between steps, limits before any work, records that
survive a restart; OCR on a rendered screenshot; choosing the vision or OCR path."""
from __future__ import annotations

import asyncio
import io

import pytest
import pytest_asyncio

from engine import JobCancelled, LimitExceeded, Origin, Progress, Started
from engine.errors import BadRequest, UnknownModel
from engine.jobs import ChatJob, ChatMessage
from engine.media.imaging import check_image, save_upload
from engine.messages import OCR_ONLY_NOTE
from engine.runtime.engine import Engine, job_from_record
from engine.work.images import (
    ImageJob,
    ImageResult,
    OcrJob,
    VisionJob,
    VisionMessage,
    ask_about_images,
    check_image_job,
    ocr_context,
    pick_vision_model,
)
from tests.conftest import CHAT_MODEL, make_settings, requires_chat_model
from tests.models.tiny_diffusers import text_png, tiny_sd

pytest.importorskip("diffusers")
pytestmark = pytest.mark.asyncio(loop_scope="module")

ALICE = Origin(platform="test", user="alice")
SCREENSHOT = ["Error 503: disk full", "Retry in 30 seconds"]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine(tmp_path_factory, shared_models_dir):
    settings = make_settings(tmp_path_factory.mktemp("images"), shared_models_dir, threads=2,
                             max_image_side=256, max_image_steps=40, max_images=3,
                             default_chat_model=CHAT_MODEL, context_tokens=2048)
    eng = Engine(settings, gpu_total=None)
    eng.registry.add(tiny_sd(), name="tiny-sd")
    eng.refresh_models()
    await eng.start(resume=False)
    yield eng
    await eng.close()


async def run(handle, timeout=60):
    async def go():
        events = [e async for e in handle]
        return events, await handle.result()
    return await asyncio.wait_for(go(), timeout)


async def test_generates_pngs_with_step_progress(engine):
    handle = await engine.submit(check_image_job(
        ImageJob(model="tiny-sd", origin=ALICE, prompt="a lighthouse", n=2, steps=3, seed=11), engine.settings))
    events, result = await run(handle)
    assert isinstance(result, ImageResult)
    assert any(isinstance(e, Started) for e in events)
    assert [(e.step, e.total) for e in events if isinstance(e, Progress)] == [(0, 3), (1, 3), (2, 3), (3, 3)]
    from PIL import Image
    for image, seed in zip(result.images, (11, 12)):
        data = image.read()
        assert data.startswith(b"\x89PNG")
        assert Image.open(io.BytesIO(data)).size == (64, 64) and image.seed == seed
        assert image.path.startswith(str(engine.settings.data_path / "images"))
    record = await engine.store.get_job(handle.id)
    assert record["status"] == "done" and "b64" not in str(record["result"])


async def test_default_image_model_and_jpeg(engine):
    handle = await engine.submit(check_image_job(
        ImageJob(origin=ALICE, prompt="a hill", steps=1, width=128, height=64, format="jpeg"), engine.settings))
    _, result = await run(handle)
    assert result.model == "tiny-sd" and result.images[0].read().startswith(b"\xff\xd8")
    assert (result.images[0].width, result.images[0].height) == (128, 64)


async def test_cancel_stops_between_steps(engine):
    handle = await engine.submit(check_image_job(
        ImageJob(model="tiny-sd", origin=ALICE, prompt="a storm", steps=40, seed=1), engine.settings))
    steps = []

    async def go():
        async for e in handle:
            if isinstance(e, Progress) and e.step >= 1:
                steps.append(e.step)
                if len(steps) == 1:
                    await handle.cancel()
        await handle.result()
    with pytest.raises(JobCancelled):
        await asyncio.wait_for(go(), 60)
    assert max(steps) < 40
    assert (await engine.store.get_job(handle.id))["status"] == "cancelled"


@pytest.mark.parametrize("job, error", [
    (ImageJob(prompt="x", n=4), LimitExceeded),
    (ImageJob(prompt="x", width=512, height=512), LimitExceeded),
    (ImageJob(prompt="x", steps=41), LimitExceeded),
    (ImageJob(prompt="x" * 1001), LimitExceeded),
    (ImageJob(prompt="   "), BadRequest),
    (ImageJob(prompt="x", width=100, height=64), BadRequest),
    (ImageJob(prompt="x", width=64), BadRequest),
    (ImageJob(prompt="x", format="tiff"), BadRequest),
])
async def test_limits_are_checked_before_any_work(engine, job, error):
    with pytest.raises(error) as info:
        check_image_job(job, engine.settings)
    assert 400 <= info.value.status < 500 and info.value.message


async def test_memory_saving_settings_follow_the_memory_managers_budget(tmp_path, shared_models_dir):
    """The same pipeline, loaded by the engine's memory manager: in a tight budget with
    attention slicing and VAE tiling switched on in diffusers, in a roomy one without."""
    seen = {}
    for budget_mb in (600, 8192):   # 600: torch's own 430 MiB leaves too little for the pipeline
        settings = make_settings(tmp_path / str(budget_mb), shared_models_dir, threads=2,
                                 device="cpu", cpu_budget_mb=budget_mb)
        eng = Engine(settings, gpu_total=None)
        eng.registry.add(tiny_sd(), name="tiny-sd")
        eng.refresh_models()
        await eng.start(resume=False)
        try:
            pipe, device = await eng.models.acquire("tiny-sd")
            eng.models.release("tiny-sd")
            processors = {type(p).__name__ for p in pipe.pipe.unet.attn_processors.values()}
            seen[budget_mb] = (device, pipe.plan.attention_slicing, pipe.pipe.vae.use_tiling, processors)
        finally:
            await eng.close()
    assert seen[600] == ("cpu", True, True, {"SlicedAttnProcessor"})
    assert seen[8192][:3] == ("cpu", False, False) and "SlicedAttnProcessor" not in seen[8192][3]


async def test_seed_is_chosen_at_intake_and_records_round_trip():
    job = check_image_job(ImageJob(prompt="a fox", origin=ALICE), make_settings("/tmp/unused"))
    assert isinstance(job.seed, int)
    assert job_from_record(ImageJob, job.to_record()) == job
    vision = VisionJob(origin=ALICE, messages=[VisionMessage("user", "what is this?", ["/x.png"])])
    assert job_from_record(VisionJob, vision.to_record()) == vision
    ocr = OcrJob(origin=ALICE, images=["/a.png"])
    assert job_from_record(OcrJob, ocr.to_record()) == ocr
    chat = ChatJob(origin=ALICE, messages=[ChatMessage("user", "hi")])
    assert job_from_record(ChatJob, chat.to_record()) == chat


def saved(settings, data: bytes) -> str:
    return save_upload(data, check_image(data, settings), settings)


async def test_ocr_reads_a_rendered_screenshot(engine):
    path = saved(engine.settings, text_png(SCREENSHOT))
    handle = await engine.submit(OcrJob(origin=ALICE, images=[path]))
    events, result = await run(handle)
    assert result.model == "rapidocr-ppocrv4"
    text = result.text.lower()
    assert "503" in text and "disk" in text and "full" in text and "retry" in text
    assert [e for e in events if isinstance(e, Progress)] == [Progress(1, 1)]


async def test_ocr_context_puts_each_images_text_after_its_message():
    msgs = ocr_context([VisionMessage("system", "be brief"),
                        VisionMessage("user", "what does it say?", ["a", "b"])], ["HELLO", ""])
    assert msgs[0] == ChatMessage("system", "be brief")
    assert "what does it say?" in msgs[1].content and "HELLO" in msgs[1].content
    assert "image 2: no text could be read" in msgs[1].content


async def test_without_a_vision_model_ocr_and_the_chat_model_answer(engine, tmp_path):
    assert pick_vision_model(engine) == ("ocr", None)
    how, model = pick_vision_model(engine, CHAT_MODEL)
    assert how == "ocr" and model.name == CHAT_MODEL
    with pytest.raises(UnknownModel):
        pick_vision_model(engine, "tiny-sd")


@requires_chat_model
async def test_ocr_answer_context_holds_the_text_and_says_so(engine):
    path = saved(engine.settings, text_png(SCREENSHOT))
    answer = await asyncio.wait_for(ask_about_images(
        engine, ALICE, [VisionMessage("user", "What does the error say?", [path])],
        max_tokens=16, temperature=0.0), 60)
    assert answer.via == "ocr" and answer.prefix == OCR_ONLY_NOTE
    job = answer.handle.job
    assert job.kind == "chat" and job.model == CHAT_MODEL
    context = "\n".join(m.content for m in job.messages).lower()
    assert "503" in context and "disk" in context
    result = await asyncio.wait_for(answer.handle.result(), 60)
    assert result.text


async def test_a_vision_model_is_preferred_once_installed(tmp_path, shared_models_dir):
    # A folder in the llava-gguf layout (model + mmproj). Only the choice is tested here; the
    # tiny random-weight pair answers in tests/models/test_llava_vision.py and test_vision_api.py.
    folder = tmp_path / "llava-test"
    folder.mkdir()
    (folder / "llava-v1.5-tiny.gguf").write_bytes(b"GGUF" + bytes(16))
    (folder / "mmproj-tiny.gguf").write_bytes(b"GGUF" + bytes(16))
    settings = make_settings(tmp_path / "data", shared_models_dir)
    eng = Engine(settings, gpu_total=None)
    try:
        model = eng.registry.add(folder)
        assert (model.kind, model.fmt) == ("vision", "llava-gguf")
        assert pick_vision_model(eng) == ("vision", eng.refresh_models()["llava-test"])
    finally:
        await eng.close()
