"""The diffusers backend: the memory plan (pure, no GPU needed) and a tiny random-weight Stable
Diffusion pipeline registered with the registry and loaded with diffusers' from_pretrained."""
from __future__ import annotations

import io

import pytest

from models.diffusers_image import DiffusersImage, GenerationRequest, GiB, plan_memory, weight_sizes
from models.registry import Registry
from tests.models.tiny_diffusers import tiny_sd

pytest.importorskip("diffusers")

SDXL = dict(weights_bytes=int(6.9 * GiB), largest_bytes=int(5.1 * GiB))   # fp16 SDXL
MP = 1024 * 1024


def test_cpu_runs_float32_without_offload():
    plan = plan_memory("cpu", **SDXL, room_bytes=None, pixels=512 * 512)
    assert (plan.dtype, plan.offload, plan.attention_slicing, plan.vae_tiling) == ("float32", "none", False, False)
    assert plan_memory("cpu", **SDXL, room_bytes=None, pixels=2048 * 2048).vae_tiling
    roomy = plan_memory("cpu", **SDXL, room_bytes=64 * GiB, pixels=MP)
    assert not roomy.attention_slicing and roomy.offload == "none"
    tight = plan_memory("cpu", **SDXL, room_bytes=16 * GiB, pixels=MP)     # fp32 SDXL is ~14 GiB
    assert tight.attention_slicing and tight.vae_tiling and tight.offload == "none"
    assert "budget" in tight.reason


@pytest.mark.parametrize("free_gib, offload, slicing", [
    (24, "none", False),        # a 24 GB card holds SDXL and its activations
    (8.5, "none", True),        # the weights fit; attention slicing and VAE tiling make room
    (6.5, "model", True),       # the weights do not fit, the UNet alone does
    (4, "sequential", True),    # not even the UNet: layer by layer
])
def test_cuda_plan_follows_free_vram(free_gib, offload, slicing):
    plan = plan_memory("cuda", **SDXL, room_bytes=int(free_gib * GiB), pixels=MP)
    assert plan.dtype == "float16"
    assert plan.offload == offload
    assert plan.attention_slicing is slicing and plan.vae_tiling is slicing
    assert plan.reason


def test_smaller_images_need_less():
    tight = int(8 * GiB)
    assert plan_memory("cuda", **SDXL, room_bytes=tight, pixels=MP).attention_slicing
    assert not plan_memory("cuda", **SDXL, room_bytes=tight, pixels=512 * 512).attention_slicing


def test_weight_sizes_count_fp32_files_at_half():
    total, largest, has_fp16 = weight_sizes(tiny_sd())
    on_disk = sum(p.stat().st_size for p in tiny_sd().rglob("*.safetensors"))
    assert not has_fp16
    assert total == pytest.approx(on_disk / 2, rel=0.01)
    assert 0 < largest < total


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """Both tiny pipelines added with the registry, as `confab models add FOLDER` does."""
    data = tmp_path_factory.mktemp("data")
    registry = Registry(data, data / "models")
    plain = registry.add(tiny_sd(), name="tiny-sd")
    safe = registry.add(tiny_sd(safety=True), name="tiny-sd-safe")
    return data, plain, safe


def test_models_add_detects_a_diffusers_folder_and_it_stays_registered(registered):
    data, plain, safe = registered
    assert (plain.kind, plain.fmt) == ("image", "diffusers")
    again = Registry(data, data / "models").installed()     # a later run, same data folder
    assert again["tiny-sd"].path == plain.path and again["tiny-sd-safe"].kind == "image"


@pytest.fixture(scope="module")
def pipe(registered):
    return DiffusersImage(registered[1].path, "cpu", threads=2)


def test_generates_images_of_the_asked_size_reproducibly(pipe):
    req = pipe.resolve(GenerationRequest("a red fox", n=2, steps=2, seed=7, guidance=0.0), 1024)
    assert (req.width, req.height) == (64, 64)          # the pipeline's native size
    steps = []
    out = pipe.generate(req, lambda k, n: steps.append((k, n)), lambda: False)
    assert [im.size for im in out.images] == [(64, 64), (64, 64)]
    assert out.seeds == [7, 8] and steps == [(1, 2), (2, 2)]
    again = pipe.generate(GenerationRequest("a red fox", n=1, width=64, height=64, steps=2, seed=8,
                                            guidance=0.0), lambda k, n: None, lambda: False)
    assert again.images[0].tobytes() == out.images[1].tobytes()     # seed 8 draws the same
    assert out.images[0].tobytes() != out.images[1].tobytes()


def test_other_sizes_and_guidance(pipe):
    out = pipe.generate(GenerationRequest("a boat", negative_prompt="blurry", width=96, height=64,
                                          steps=1, seed=1, guidance=5.0), lambda k, n: None, lambda: False)
    assert out.images[0].size == (96, 64)


def test_cancel_stops_between_steps(pipe):
    steps = []
    out = pipe.generate(GenerationRequest("a tree", width=64, height=64, steps=20, seed=1, guidance=0.0),
                        lambda k, n: steps.append(k), lambda: len(steps) >= 2)
    assert out.cancelled
    assert steps == [1, 2]


def test_pipeline_with_safety_checker_and_feature_extractor(registered):
    pipe = DiffusersImage(registered[2].path, "cpu", threads=2)
    assert pipe.pipe.safety_checker is not None and pipe.pipe.feature_extractor is not None
    out = pipe.generate(GenerationRequest("a cat", width=64, height=64, steps=1, seed=3, guidance=0.0),
                        lambda k, n: None, lambda: False)
    assert out.images[0].size == (64, 64) and len(out.nsfw) == 1
    buf = io.BytesIO()
    out.images[0].save(buf, "PNG")
    assert pipe.memory_bytes() > 0
