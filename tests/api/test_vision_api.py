"""With a vision model installed (the tiny random-weight LLaVA-1.5-style pair, registered like
`confab models add FOLDER`), chat requests with images go to it: through the engine, and
through the API with the official openai client, streamed and not. Asserts on the path taken
and the shapes, not on meaning (the weights are random)."""
from __future__ import annotations

import asyncio
import base64

import openai
import pytest
import pytest_asyncio
from aiohttp import web

from bots.api.app import create_app
from engine import Origin, Token
from engine.media.imaging import check_image, save_upload
from engine.messages import OCR_ONLY_NOTE
from engine.runtime.engine import Engine
from engine.work.images import VisionMessage, ask_about_images
from tests.conftest import make_settings
from tests.models.tiny_diffusers import text_png

pytest.importorskip("gguf")
pytest.importorskip("llama_cpp")
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(tmp_path_factory, shared_models_dir):
    from tests.models.tiny_llava import build_tiny_llava
    folder = build_tiny_llava(tmp_path_factory.mktemp("models-local") / "tiny-llava")
    settings = make_settings(tmp_path_factory.mktemp("api-vision"), shared_models_dir, threads=2,
                             context_tokens=512, max_tokens=8)
    engine = Engine(settings, gpu_total=None)
    model = engine.registry.add(folder)
    assert (model.name, model.kind, model.fmt) == ("tiny-llava", "vision", "llava-gguf")
    engine.refresh_models()
    await engine.start(resume=False)
    runner = web.AppRunner(create_app(engine))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="test",
                                max_retries=0, timeout=60)
    yield engine, client
    await client.close()
    await runner.cleanup()
    await engine.close()


def image_message(png: bytes) -> list[dict]:
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    return [{"role": "user", "content": [{"type": "text", "text": "What is in the picture?"},
                                         {"type": "image_url", "image_url": {"url": url}}]}]


async def test_the_engine_sends_images_to_the_vision_model(server):
    engine, _ = server
    png = text_png(["hello"])
    path = save_upload(png, check_image(png, engine.settings), engine.settings)
    answer = await ask_about_images(engine, Origin(platform="test", user="eve"),
                                    [VisionMessage("user", "What is this?", [path])],
                                    max_tokens=6, temperature=0.0)
    assert answer.via == "vision" and answer.prefix == ""
    assert answer.handle.job.kind == "vision" and answer.handle.job.model == "tiny-llava"

    async def collect():
        return [e async for e in answer.handle], await answer.handle.result()
    events, result = await asyncio.wait_for(collect(), 60)
    tokens = "".join(e.text for e in events if isinstance(e, Token))
    assert tokens == result.text and result.usage.completion_tokens > 0


async def test_api_chat_with_an_image_uses_the_vision_model(server):
    engine, client = server
    raw = await client.chat.completions.with_raw_response.create(
        model="", messages=image_message(text_png(["hello"])), max_tokens=6, temperature=0)
    assert raw.headers["x-confab-image-path"] == "vision"
    completion = raw.parse()
    assert completion.model == "tiny-llava"
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert not completion.choices[0].message.content.startswith(OCR_ONLY_NOTE.strip()[:20])
    record = await engine.store.get_job(raw.headers["x-confab-job-id"])
    assert record["kind"] == "vision" and "base64" not in str(record["payload"])   # a path, not bytes


async def test_api_chat_with_an_image_streams_from_the_vision_model(server):
    _, client = server
    stream = await client.chat.completions.create(
        model="tiny-llava", messages=image_message(text_png(["hi"])), max_tokens=4,
        temperature=0, stream=True, stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)
