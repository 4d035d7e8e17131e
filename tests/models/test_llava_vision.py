"""Vision models: which family a model is (and the template it runs with), the folder layout it
needs, the request the runner receives (images as data URLs, text last), and generation on
llama.cpp's server with a tiny random-weight LLaVA-1.5-style pair (a llama GGUF and a CLIP
projector GGUF built in the test with the gguf package; no real LLaVA weights can be had
offline). The template names are checked against the pinned llama.cpp."""
from __future__ import annotations

import base64

import pytest

from models.llava_vision import (
    DEFAULT_HANDLER,
    HANDLERS,
    VisionTurn,
    build_messages,
    handler_name,
    split_files,
)


@pytest.mark.parametrize("files, expected", [
    (["ggml-model-q4_k.gguf", "mmproj-model-f16.gguf"], "llava-1.5"),      # the catalog's LLaVA 1.5
    (["llava-v1.6-mistral-7b.Q4_K_M.gguf", "mmproj-model-f16.gguf"], "llava-1.6"),
    (["moondream2-text-model-f16.gguf", "moondream2-mmproj-f16.gguf"], "moondream"),
    (["nanollava-text-model-f16.gguf", "nanollava-mmproj-f16.gguf"], "nanollava"),
    (["MiniCPM-V-2_6-Q4_K_M.gguf", "mmproj-model-f16.gguf"], "minicpm-v-2.6"),
    (["Qwen2.5-VL-3B-Instruct-Q4_K_M.gguf", "mmproj-Qwen2.5-VL-3B-f16.gguf"], "qwen2.5-vl"),
])
def test_handler_from_file_names(files, expected):
    assert handler_name({}, files) == expected


def test_handler_option_wins_and_is_checked():
    assert handler_name({"handler": "moondream"}, ["llava.gguf"]) == "moondream"
    with pytest.raises(ValueError, match="Unknown vision handler"):
        handler_name({"handler": "gpt-4v"}, [])
    assert DEFAULT_HANDLER == "llava-1.5" and DEFAULT_HANDLER in HANDLERS


def test_every_vision_model_in_the_catalog_names_its_handler_and_projector():
    from models.catalog import CATALOG
    vision = [e for e in CATALOG if e.kind == "vision"]
    assert {handler_name(e.options, []) for e in vision} >= {"llava-1.5", "llava-1.6", "moondream"}
    for entry in vision:
        files = [f.path for f in entry.files]
        assert handler_name(entry.options, files) == handler_name({}, files), entry.name
        assert len(files) == 2 and sum("mmproj" in f for f in files) == 1, entry.name


def test_split_files(tmp_path):
    (tmp_path / "ggml-model-q4_k.gguf").write_bytes(b"GGUF")
    (tmp_path / "mmproj-model-f16.gguf").write_bytes(b"GGUF")
    model, projector = split_files(tmp_path)
    assert model.endswith("ggml-model-q4_k.gguf") and projector.endswith("mmproj-model-f16.gguf")
    assert split_files(model) == (model, projector)     # the model's file, projector beside it
    (tmp_path / "mmproj-model-f16.gguf").unlink()
    with pytest.raises(ValueError, match="projector"):
        split_files(tmp_path)


def test_request_shape_puts_images_first_as_data_urls():
    png = b"\x89PNG\r\n\x1a\nfake"
    messages = build_messages([VisionTurn("system", "Be brief."),
                               VisionTurn("user", "What is this?", [(png, "image/png")]),
                               VisionTurn("assistant", "A cat."),
                               VisionTurn("user", "And its colour?")])
    assert messages[0] == {"role": "system", "content": "Be brief."}
    parts = messages[1]["content"]
    assert parts[0]["type"] == "image_url" and parts[-1] == {"type": "text", "text": "What is this?"}
    url = parts[0]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,") and base64.b64decode(url.split(",", 1)[1]) == png
    assert messages[2:] == [{"role": "assistant", "content": "A cat."},
                            {"role": "user", "content": "And its colour?"}]


def test_llava15_template_renders_our_request():
    """The handler's own chat template turns our request into LLaVA 1.5's prompt, the image
    URL where its mtmd marker goes and the question after it."""
    chat_format = pytest.importorskip("llama_cpp.llama_chat_format")
    import jinja2
    template = jinja2.Environment().from_string(chat_format.Llava15ChatHandler.CHAT_FORMAT)
    messages = build_messages([VisionTurn("system", "Be brief."),
                               VisionTurn("user", "What is this?", [(b"x", "image/png")])])
    prompt = template.render(messages=messages, add_generation_prompt=True)
    assert prompt == "Be brief.\nUSER: data:image/png;base64,eA==What is this?\nASSISTANT: "


# -- a tiny random-weight LLaVA-1.5-style model through llama-cpp-python's handler --------------

@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory):
    pytest.importorskip("gguf")
    pytest.importorskip("llama_cpp")
    from tests.models.tiny_llava import build_tiny_llava
    return build_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))


def red_png() -> bytes:
    import io

    from PIL import Image
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (255, 0, 0)).save(out, "PNG")
    return out.getvalue()


async def test_tiny_llava_runs_on_a_runner_encodes_the_image_and_streams(tiny_llava, tmp_path):
    """The pair loads in llama.cpp's server with its projector, reads the image, streams,
    repeats itself greedily, and cancels."""
    import asyncio

    from engine.work.chat import load_gguf
    from engine.work.images import VisionJob, VisionMessage  # (registers the vision executor)
    from engine.work.registry import EXECUTORS, RunContext
    from models.registry import InstalledModel
    from tests.conftest import make_settings
    settings = make_settings(tmp_path, threads=2, context_tokens=512, chat_slots=1)
    image = tmp_path / "red.png"
    image.write_bytes(red_png())
    model = InstalledModel("tiny-llava", "vision", "llava-gguf", str(tiny_llava), 2**20)
    runner = await asyncio.to_thread(load_gguf, model, "cpu", settings)
    try:
        assert "--mmproj" in runner.process.spec.argv(runner.process.binary, "x")
        tokens = []
        ctx = RunContext(emit=tokens.append, cancelled=lambda: False, device="cpu", settings=settings)
        job = VisionJob(model="tiny-llava", messages=[VisionMessage("user", "What colour is this?", [str(image)])],
                        max_tokens=6, temperature=0.0, seed=1)
        out = await EXECUTORS["vision"](runner, job, ctx)
        assert out.usage.prompt_tokens > 16           # the image's tokens are in the prompt
        assert 0 < len(tokens) <= 6 and out.finish_reason == "length"
        assert out.text == "".join(t.text for t in tokens)
        again = await EXECUTORS["vision"](runner, job, RunContext(lambda t: None, lambda: False, "cpu", settings))
        assert again.text == out.text                      # greedy: the same answer
        stopped = await EXECUTORS["vision"](runner, VisionJob(
            model="tiny-llava", messages=job.messages, max_tokens=50, temperature=0.0),
            RunContext(lambda t: None, lambda: True, "cpu", settings))
        assert stopped.finish_reason == "cancelled"
    finally:
        await asyncio.to_thread(runner.close)
