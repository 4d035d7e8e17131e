"""The image endpoints with the official openai client against a live server on loopback:
images.generate (b64_json and url, links that expire), image parts in chat completions (data:
URLs; OCR when no vision model is installed), and clear 4xx errors for bad input."""
from __future__ import annotations

import base64
import io
import os
import sqlite3
import time

import aiohttp
import openai
import pytest
import pytest_asyncio
from aiohttp import web

from bots.api.app import create_app
from engine.media.imaging import images_dir
from engine.messages import OCR_ONLY_NOTE
from engine.runtime.engine import Engine
from tests.conftest import CHAT_MODEL, make_settings, requires_chat_model
from tests.models.tiny_diffusers import text_png, tiny_sd

pytest.importorskip("diffusers")
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(tmp_path_factory, shared_models_dir):
    settings = make_settings(tmp_path_factory.mktemp("api-images"), shared_models_dir, threads=2,
                             max_image_side=256, max_image_steps=8, max_images=2,
                             max_image_pixels=1_000_000, image_url_ttl_s=60,
                             default_chat_model=CHAT_MODEL, context_tokens=2048)
    engine = Engine(settings, gpu_total=None)
    engine.registry.add(tiny_sd(), name="tiny-sd")
    engine.refresh_models()
    await engine.start(resume=False)
    runner = web.AppRunner(create_app(engine))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="test",
                                max_retries=0, timeout=60)
    yield engine, client, port
    await client.close()
    await runner.cleanup()
    await engine.close()


def png_size(data: bytes) -> tuple[int, int]:
    from PIL import Image
    return Image.open(io.BytesIO(data)).size


async def test_generate_b64_json(server):
    engine, client, _ = server
    r = await client.images.generate(prompt="a red fox", model="tiny-sd", n=2, size="64x64",
                                     response_format="b64_json", extra_body={"steps": 2, "seed": 5})
    assert len(r.data) == 2 and r.created > time.time() - 60
    for item in r.data:
        data = base64.b64decode(item.b64_json)
        assert data.startswith(b"\x89PNG") and png_size(data) == (64, 64)
    again = await client.images.generate(prompt="a red fox", model="tiny-sd", size="64x64",
                                         extra_body={"steps": 2, "seed": 5})
    assert again.data[0].b64_json == r.data[0].b64_json          # same seed, same picture


async def test_generate_url_is_served_then_expires(server):
    engine, client, port = server
    r = await client.images.generate(prompt="a boat", model="dall-e-3", size="128x64",
                                     response_format="url", extra_body={"steps": 1})
    url = r.data[0].url
    assert url.startswith(f"http://127.0.0.1:{port}/files/images/")
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as resp:                    # no API key needed: the name is the key
            assert resp.status == 200 and resp.content_type == "image/png"
            assert png_size(await resp.read()) == (128, 64)
        path = images_dir(engine.settings) / url.rsplit("/", 1)[1]
        old = time.time() - 120
        os.utime(path, (old, old))
        async with http.get(url) as resp:
            assert resp.status == 404
        assert not path.exists()
        async with http.get(url.rsplit("/", 1)[0] + "/..%2Fconfab.db") as resp:
            assert resp.status == 404


def stored_jobs(engine) -> int:
    with sqlite3.connect(engine.store.path) as db:
        return db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]


@pytest.mark.parametrize("kwargs, status, word", [
    (dict(size="512x512"), 400, "limit"),
    (dict(n=3), 400, "limit"),
    (dict(prompt="x" * 1001), 400, "prompt"),
    (dict(size="big"), 400, "size"),
    (dict(size="100x64"), 400, "multiples of 8"),
    (dict(response_format="gif"), 400, "response_format"),
    (dict(extra_body={"steps": 9}), 400, "steps"),
    (dict(model="no-such-model"), 404, "no-such-model"),
])
async def test_bad_requests_fail_at_once_with_clear_errors(server, kwargs, status, word):
    engine, client, _ = server
    args = {"prompt": "a cat", **kwargs}
    before = stored_jobs(engine)
    with pytest.raises(openai.APIStatusError) as info:
        await client.images.generate(**args)
    assert info.value.status_code == status
    assert word.lower() in info.value.message.lower()
    assert stored_jobs(engine) == before                       # refused before any work: no job


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def image_message(url: str, text: str = "What does the error message say?") -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": text},
                                         {"type": "image_url", "image_url": {"url": url}}]}]


@requires_chat_model
async def test_chat_with_a_data_url_image_reads_its_text(server):
    engine, client, _ = server
    shot = text_png(["Error 503: disk full", "Retry in 30 seconds"])
    raw = await client.chat.completions.with_raw_response.create(
        model="", messages=image_message(data_url(shot)), max_tokens=24, temperature=0)
    assert raw.headers["x-confab-image-path"] == "ocr"
    completion = raw.parse()
    answer = completion.choices[0].message.content
    assert answer.startswith(OCR_ONLY_NOTE) and len(answer) > len(OCR_ONLY_NOTE)
    job = engine.handle(raw.headers["x-confab-job-id"]).job
    context = "\n".join(m.content for m in job.messages).lower()
    assert "503" in context and "disk" in context


@requires_chat_model
async def test_chat_with_an_image_streams_the_note_first(server):
    engine, client, _ = server
    stream = await client.chat.completions.create(
        model=CHAT_MODEL, messages=image_message(data_url(text_png(["HELLO WORLD"]))),
        max_tokens=8, temperature=0, stream=True)
    chunks = [c async for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[1].choices[0].delta.content == OCR_ONLY_NOTE
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def big_png() -> bytes:
    from PIL import Image
    out = io.BytesIO()
    Image.new("L", (1100, 1000)).save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize("url, status, word", [
    ("https://example.com/cat.png", 400, "data: url"),
    (data_url(b"this is not an image at all"), 400, "not an image"),
    (data_url(text_png(["x"])[:300]), 400, "damaged"),
    (data_url(big_png()), 413, "pixels"),
    ("data:image/png;base64,@@@@", 400, "base64"),
    ("ftp://example.com/x.png", 400, "data: url"),
])
async def test_bad_images_in_chat_get_clear_errors(server, url, status, word):
    engine, client, _ = server
    before = len(engine.active_jobs())
    with pytest.raises(openai.APIStatusError) as info:
        await client.chat.completions.create(model="", messages=image_message(url))
    assert info.value.status_code == status
    assert word in info.value.message.lower()
    assert len(engine.active_jobs()) == before                   # nothing was queued


async def test_too_many_images_in_one_chat_request(server):
    engine, client, _ = server
    part = {"type": "image_url", "image_url": {"url": data_url(text_png(["A"]))}}
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model="", messages=[
            {"role": "user", "content": [{"type": "text", "text": "compare"}, part, part, part]}])
    assert "number of images" in info.value.message.lower()


async def test_http_image_urls_are_fetched_only_from_configured_hosts(tmp_path):
    """CONFAB_IMAGE_URL_HOSTS lets an admin allow hosts: then the image is fetched (no
    redirects, up to the byte limit) and checked like an inline one; other hosts stay refused."""
    from bots.api.vision import vision_messages
    from engine.errors import BadMedia, BadRequest, LimitExceeded
    shot = text_png(["fetched"])
    app = web.Application()
    app.router.add_get("/shot.png", lambda r: web.Response(body=shot, content_type="image/png"))
    app.router.add_get("/moved.png", lambda r: web.HTTPFound("/shot.png"))
    app.router.add_get("/big.png", lambda r: web.Response(body=b"\x89PNG" + bytes(300_000)))
    app.router.add_get("/page.png", lambda r: web.Response(text="<html>not an image</html>"))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    allowed = make_settings(tmp_path, max_image_bytes=200_000, image_url_hosts=("127.0.0.1",))

    def ask(url):
        return [{"role": "user", "content": [{"type": "text", "text": "what is it?"},
                                             {"type": "image_url", "image_url": {"url": url}}]}]
    try:
        (message,) = await vision_messages(ask(f"{base}/shot.png"), allowed)
        assert message.text == "what is it?"
        with open(message.images[0], "rb") as f:
            assert f.read() == shot                                  # kept as fetched
        for path, error, word in (("/moved.png", BadMedia, "http 302"),
                                  ("/big.png", LimitExceeded, "bytes"),
                                  ("/page.png", BadMedia, "not an image")):
            with pytest.raises(error) as info:
                await vision_messages(ask(base + path), allowed)
            assert word in info.value.message.lower()
        closed = make_settings(tmp_path, image_url_hosts=("images.example.com",))
        with pytest.raises(BadRequest, match="CONFAB_IMAGE_URL_HOSTS"):
            await vision_messages(ask(f"{base}/shot.png"), closed)
    finally:
        await runner.cleanup()
