"""Image LoRA adapters through the real engine: a random LoRA on the tiny Stable Diffusion
pipeline (saved with diffusers' save_lora_weights) changes the image, the base's image stays
the same before and after, and both run on the one resident pipeline."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest
import pytest_asyncio
from PIL import Image

from engine.jobs import Origin
from engine.runtime.engine import Engine
from engine.work.images import ImageJob, check_image_job
from tests.conftest import make_settings
from tests.models.tiny_diffusers import tiny_sd
from tests.models.tiny_lora import make_image_lora

pytest.importorskip("diffusers")
pytest.importorskip("peft")
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine(tmp_path_factory, shared_models_dir):
    folder = tmp_path_factory.mktemp("lora-images")
    eng = Engine(make_settings(folder, shared_models_dir, threads=2, max_image_side=256),
                 gpu_total=None)
    eng.registry.add(tiny_sd(), name="tiny-sd")
    eng.registry.add(make_image_lora(folder / "house-style", tiny_sd()), kind="lora",
                     base="tiny-sd", name="house-style")
    eng.registry.add(make_image_lora(folder / "other", tiny_sd(), seed=3), name="other-style")
    eng.refresh_models()
    await eng.start(resume=False)
    yield eng
    await eng.close()


async def pixels(engine: Engine, model: str) -> np.ndarray:
    job = check_image_job(ImageJob(model=model, origin=Origin(platform="test", user="bo"),
                                   prompt="a poster of a lighthouse", steps=2, seed=5,
                                   width=64, height=64), engine.settings)
    result = await asyncio.wait_for((await engine.submit(job)).result(), 120)
    assert result.model == model
    with Image.open(result.images[0].path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.int16)


async def test_an_image_adapter_changes_the_image_and_the_bases_stays_the_same(engine):
    base = await pixels(engine, "tiny-sd")
    styled = await pixels(engine, "house-style")
    assert np.abs(styled - base).mean() > 1.0
    assert np.array_equal(await pixels(engine, "tiny-sd"), base)
    other = await pixels(engine, "other-style")
    assert np.abs(other - styled).mean() > 1.0
    assert np.array_equal(await pixels(engine, "house-style"), styled)   # cached, same again
    assert np.array_equal(await pixels(engine, "tiny-sd"), base)


async def test_adapters_load_into_the_one_resident_pipeline(engine):
    await pixels(engine, "house-style")
    assert engine.models.resident_names() == ["tiny-sd"]
    loads = engine.models.loads
    pipe = engine.models.instance_of("tiny-sd")
    await pixels(engine, "tiny-sd")
    await pixels(engine, "other-style")
    assert engine.models.loads == loads and engine.models.instance_of("tiny-sd") is pipe
    assert set(pipe.loaded_adapters) == {"house_style", "other_style"}


async def test_adapters_unused_for_their_keep_alive_are_unloaded(engine):
    await pixels(engine, "house-style")
    pipe = engine.models.instance_of("tiny-sd")
    idle, pipe.adapter_idle_s = pipe.adapter_idle_s, 0.0
    try:
        await pixels(engine, "other-style")
        assert pipe.loaded_adapters == ["other_style"]
        await pixels(engine, "tiny-sd")
        assert pipe.loaded_adapters == []
    finally:
        pipe.adapter_idle_s = idle
