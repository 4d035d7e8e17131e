"""Registering LoRA adapters: `confab models add PATH --kind lora` as people run it, the kind
and base recognised from the file, and bad input (a base that is not installed, shapes that do
not fit, another architecture, a file cut short, a model that is no adapter) refused with words
at add time, never at request time."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bots.api.chat import model_object
from models.registry import ModelError, Registry, _gguf_of
from tests.conftest import CHAT_MODEL, requires_chat_model
from tests.models.tiny_diffusers import tiny_sd
from tests.models.tiny_lora import make_chat_lora, make_image_lora

pytestmark = requires_chat_model
CONFAB = Path(sys.executable).parent / "confab"


@pytest.fixture
def registry(tmp_path, shared_models_dir) -> Registry:
    return Registry(tmp_path / "data", shared_models_dir)


@pytest.fixture
def base_gguf(registry) -> str:
    return registry.get(CHAT_MODEL).path


def refused(registry: Registry, path, **kw) -> str:
    with pytest.raises(ModelError) as e:
        registry.add(path, **kw)
    return str(e.value)


def test_a_chat_adapter_is_recognised_and_its_base_found_from_the_file(registry, base_gguf, tmp_path):
    model = registry.add(make_chat_lora(tmp_path / "Brand Voice.gguf", base_gguf))
    assert (model.name, model.kind, model.fmt, model.parent) == ("Brand-Voice", "chat", "gguf-lora", CHAT_MODEL)
    assert model.options["rank"] == 8 and model.options["layers"] == 12 and model.options["scale"] == 1.0
    assert model.size == os.path.getsize(tmp_path / "Brand Voice.gguf")
    listed = model_object(registry.installed()["Brand-Voice"])
    assert listed["parent"] == CHAT_MODEL and listed["kind"] == "chat"
    assert "parent" not in model_object(registry.get(CHAT_MODEL))


def test_a_base_that_is_not_installed_is_refused_with_the_installed_ones(registry, base_gguf, tmp_path):
    words = refused(registry, make_chat_lora(tmp_path / "a.gguf", base_gguf), kind="lora", base="llama-70b")
    assert "'llama-70b' is not installed" in words and CHAT_MODEL in words


def write_adapter(path: Path, arch: str, tensors: dict[str, np.ndarray]) -> Path:
    import gguf
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, 8.0)
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_shapes_that_do_not_fit_the_base_are_refused(registry, base_gguf, tmp_path):
    path = write_adapter(tmp_path / "wrong.gguf", "llama", {   # the base's attn_q is 576 wide
        "blk.0.attn_q.weight.lora_a": np.zeros((8, 512), np.float32),
        "blk.0.attn_q.weight.lora_b": np.zeros((576, 8), np.float32)})
    words = refused(registry, path, kind="lora", base=CHAT_MODEL)
    assert "blk.0.attn_q.weight" in words and "do not fit" in words and "[512, 8]" in words


def test_a_layer_the_base_does_not_have_is_refused(registry, tmp_path):
    path = write_adapter(tmp_path / "deep.gguf", "llama", {   # SmolLM2-135M has 30 blocks
        "blk.40.attn_q.weight.lora_a": np.zeros((8, 576), np.float32),
        "blk.40.attn_q.weight.lora_b": np.zeros((576, 8), np.float32)})
    assert "changes 'blk.40.attn_q.weight', which the base model does not have" in refused(
        registry, path, kind="lora", base=CHAT_MODEL)


def test_another_architecture_is_refused(registry, tmp_path):
    gemma = registry.get("gemma3-270m")
    if gemma is None:
        pytest.skip("the Gemma 3 270M package is not installed")
    words = refused(registry, make_chat_lora(tmp_path / "g.gguf", _gguf_of(gemma), layers=(0,)),
                    kind="lora", base=CHAT_MODEL)
    assert "adapts a 'gemma3' model, but the base is a 'llama' model" in words


def test_a_file_cut_short_is_refused(registry, base_gguf, tmp_path):
    path = make_chat_lora(tmp_path / "cut.gguf", base_gguf)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    words = refused(registry, path, kind="lora", base=CHAT_MODEL)
    assert "damaged" in words and "cut short" in words


def test_a_model_that_is_no_adapter_is_refused(registry, base_gguf, tmp_path):
    assert "not a LoRA adapter" in refused(registry, base_gguf, kind="lora", base=CHAT_MODEL)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(os.urandom(4096))
    assert "not a LoRA adapter" in refused(registry, junk, kind="lora")


def test_a_chat_adapter_on_an_image_model_and_a_bad_scale_are_refused(registry, base_gguf, tmp_path):
    pytest.importorskip("diffusers")
    registry.add(tiny_sd(), name="tiny-sd")
    path = make_chat_lora(tmp_path / "a.gguf", base_gguf)
    assert "is a chat adapter, but 'tiny-sd' is a image model" in refused(registry, path, kind="lora", base="tiny-sd")
    assert "out of range" in refused(registry, path, kind="lora", base=CHAT_MODEL, scale=40)


def test_image_adapter_shapes_and_modules_are_checked_against_the_pipeline(registry, tmp_path):
    pytest.importorskip("peft")
    from safetensors.numpy import save_file
    registry.add(tiny_sd(), name="tiny-sd")
    model = registry.add(make_image_lora(tmp_path / "style", tiny_sd()))
    assert (model.kind, model.fmt, model.parent) == ("image", "diffusers-lora", "tiny-sd")
    q = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
    save_file({f"{q}.lora_A.weight": np.zeros((4, 48), np.float32),     # the layer is 64 wide
               f"{q}.lora_B.weight": np.zeros((64, 4), np.float32)}, str(tmp_path / "wide.safetensors"))
    assert "do not fit" in refused(registry, tmp_path / "wide.safetensors", kind="lora", base="tiny-sd")
    save_file({"unet.mid_block.nothing.lora_A.weight": np.zeros((4, 64), np.float32),
               "unet.mid_block.nothing.lora_B.weight": np.zeros((64, 4), np.float32)},
              str(tmp_path / "elsewhere.safetensors"))
    assert "does not have" in refused(registry, tmp_path / "elsewhere.safetensors", kind="lora", base="tiny-sd")


@pytest.mark.skipif(not CONFAB.exists(), reason="the confab script is not installed")
def test_confab_models_add_and_list_show_adapters_under_their_base(tmp_path, shared_models_dir, base_gguf):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONFAB_")}
    env.update(CONFAB_DATA_DIR=str(tmp_path / "data"), CONFAB_MODELS_DIR=str(shared_models_dir))
    path = make_chat_lora(tmp_path / "support-tone.gguf", base_gguf)

    def confab(*args):
        return subprocess.run([str(CONFAB), "models", *args], env=env, capture_output=True,
                              text=True, timeout=120)

    out = confab("add", str(path), "--kind", "lora", "--base", CHAT_MODEL, "--scale", "0.8")
    assert out.returncode == 0 and f"a chat LoRA of {CHAT_MODEL}" in out.stdout, out.stderr
    listed = confab("list").stdout
    assert f"adapters of {CHAT_MODEL}:" in listed and "support-tone" in listed and "scale 0.8" in listed
    bad = confab("add", str(path), "--kind", "lora", "--base", "nope")
    assert bad.returncode != 0 and "'nope' is not installed" in bad.stderr
