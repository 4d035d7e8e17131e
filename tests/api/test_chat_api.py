"""The OpenAI-compatible API through the official `openai` client, against a live aiohttp
server on 127.0.0.1 with the real SmolLM2 model."""
from __future__ import annotations

import asyncio
import json
import threading

import aiohttp
import openai
import pytest
import pytest_asyncio
from aiohttp import web
from openai import AsyncOpenAI

from bots.api.app import create_app
from engine.runtime.engine import Engine
from tests.conftest import CHAT_MODEL, make_settings, requires_chat_model

pytestmark = [requires_chat_model, pytest.mark.asyncio(loop_scope="module")]

FRANCE = [{"role": "system", "content": "You are a helpful assistant."},
          {"role": "user", "content": "What is the capital of France?"}]


class Server:
    def __init__(self, engine: Engine, runner: web.AppRunner, port: int):
        self.engine, self.runner, self.port = engine, runner, port
        self.base = f"http://127.0.0.1:{port}"

    def client(self, key: str = "sk-test") -> AsyncOpenAI:
        return AsyncOpenAI(base_url=f"{self.base}/v1", api_key=key, max_retries=0, timeout=60)


async def start_server(engine: Engine) -> Server:
    await engine.start()
    runner = web.AppRunner(create_app(engine), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return Server(engine, runner, port)


async def stop_server(server: Server) -> None:
    await server.runner.cleanup()
    await server.engine.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(tmp_path_factory, shared_models_dir):
    settings = make_settings(tmp_path_factory.mktemp("api"), shared_models_dir, threads=2,
                             max_body_bytes=2 * 2**20)
    s = await start_server(Engine(settings, gpu_total=None))
    yield s
    await stop_server(s)


async def raw(server: Server, method: str, path: str, **kw) -> tuple[int, dict, dict]:
    async with aiohttp.ClientSession() as http:
        async with http.request(method, server.base + path, timeout=aiohttp.ClientTimeout(total=60),
                                **kw) as resp:
            text = await resp.text()
            try:
                body = json.loads(text)
            except ValueError:
                body = {"text": text}
            return resp.status, dict(resp.headers), body


def assert_openai_error(body: dict, code: str | None = None) -> None:
    assert set(body) == {"error"}, body
    err = body["error"]
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str) and err["type"]
    assert "code" in err
    if code:
        assert err["code"] == code, err


async def assert_still_up(server: Server) -> None:
    reply = await server.client().chat.completions.create(model=CHAT_MODEL, messages=FRANCE,
                                                          temperature=0, max_tokens=4)
    assert reply.choices[0].message.content


# -- answers --------------------------------------------------------------------------------------

async def test_non_streamed_answer_says_paris(server):
    reply = await server.client().chat.completions.create(model=CHAT_MODEL, messages=FRANCE,
                                                          temperature=0, max_tokens=32)
    assert reply.object == "chat.completion" and reply.model == CHAT_MODEL
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and "Paris" in choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage.completion_tokens > 0 and reply.usage.prompt_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


async def test_default_model_and_job_id_header(server):
    response = await server.client().chat.completions.with_raw_response.create(
        model="", messages=FRANCE, temperature=0, max_tokens=4)
    job_id = response.headers.get("x-confab-job-id")
    assert job_id and job_id.startswith("job_")
    reply = response.parse()
    assert reply.model == CHAT_MODEL and reply.id == "chatcmpl-" + job_id.removeprefix("job_")
    assert (await server.engine.store.get_job(job_id))["status"] == "done"


async def test_streamed_answer_with_usage(server):
    stream = await server.client().chat.completions.create(
        model=CHAT_MODEL, messages=FRANCE, temperature=0, max_tokens=32, stream=True,
        stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    with_choices = [c for c in chunks if c.choices]
    assert with_choices[-1].choices[0].finish_reason in ("stop", "length")
    assert all(c.choices[0].finish_reason is None for c in with_choices[:-1])
    text = "".join(c.choices[0].delta.content or "" for c in with_choices)
    assert "Paris" in text
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])
    assert "usage" in chunks[0].model_dump(exclude_unset=True)   # sent as null, as OpenAI does
    assert len({c.id for c in chunks}) == 1


async def test_stream_ends_with_done_on_the_wire(server):
    body = {"model": CHAT_MODEL, "messages": FRANCE, "max_tokens": 4, "stream": True}
    async with aiohttp.ClientSession() as http:
        async with http.post(server.base + "/v1/chat/completions", json=body,
                             timeout=aiohttp.ClientTimeout(total=60)) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            assert resp.headers["X-Confab-Job-Id"].startswith("job_")
            text = await resp.text()
    events = [line for line in text.split("\n\n") if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    assert "usage" not in json.loads(events[-2][6:]) or json.loads(events[-2][6:])["usage"] is None


async def test_models_lists_every_installed_model_with_kind(server):
    models = await server.client().models.list()
    by_id = {m.id: m for m in models.data}
    assert by_id[CHAT_MODEL].kind == "chat"
    from models.catalog import KINDS
    assert all(getattr(m, "kind", None) in KINDS for m in models.data)
    one = await server.client().models.retrieve(CHAT_MODEL)
    assert one.id == CHAT_MODEL
    with pytest.raises(openai.NotFoundError):
        await server.client().models.retrieve("no-such-model")


# -- bad input --------------------------------------------------------------------------------------

async def test_invalid_json(server):
    status, _, body = await raw(server, "POST", "/v1/chat/completions", data=b"{not json",
                                headers={"Content-Type": "application/json"})
    assert status == 400
    assert_openai_error(body, "invalid_request")
    await assert_still_up(server)


async def test_unknown_model(server):
    with pytest.raises(openai.NotFoundError) as e:
        await server.client().chat.completions.create(model="gpt-17", messages=FRANCE)
    assert_openai_error(e.value.body if "error" in e.value.body else {"error": e.value.body},
                        "model_not_found")
    assert "gpt-17" in e.value.message
    await assert_still_up(server)


async def test_empty_messages(server):
    with pytest.raises(openai.BadRequestError) as e:
        await server.client().chat.completions.create(model=CHAT_MODEL, messages=[])
    assert e.value.status_code == 400 and "messages" in e.value.message
    await assert_still_up(server)


async def test_negative_max_tokens(server):
    with pytest.raises(openai.BadRequestError) as e:
        await server.client().chat.completions.create(model=CHAT_MODEL, messages=FRANCE,
                                                      max_tokens=-5)
    assert "max_tokens" in e.value.message
    await assert_still_up(server)


async def test_a_10_mb_prompt_gets_413_not_a_reset(server):
    huge = [{"role": "user", "content": "a" * (10 * 2**20)}]
    with pytest.raises(openai.APIStatusError) as e:
        await server.client().chat.completions.create(model=CHAT_MODEL, messages=huge)
    assert e.value.status_code == 413
    body = e.value.response.json()
    assert_openai_error(body, "request_too_large")
    await assert_still_up(server)


async def test_a_prompt_over_the_character_limit(server):
    long = [{"role": "user", "content": "a " * 40_000}]     # 80,000 chars, under the body limit
    with pytest.raises(openai.BadRequestError) as e:
        await server.client().chat.completions.create(model=CHAT_MODEL, messages=long)
    assert e.value.code == "context_length_exceeded"
    await assert_still_up(server)


async def test_other_bad_fields(server):
    for body, param in [({"messages": FRANCE, "temperature": 9}, "temperature"),
                        ({"messages": FRANCE, "n": 9}, "n"),          # up to 8 choices
                        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
                        ({"messages": FRANCE, "priority": 7}, "priority"),
                        ({"messages": FRANCE, "stream": "yes"}, "stream"),
                        ({"messages": FRANCE, "stream": True, "stream_options": "usage"}, "stream_options"),
                        ({"messages": FRANCE, "max_tokens": 10**9}, None),
                        ([1, 2], None)]:
        status, _, got = await raw(server, "POST", "/v1/chat/completions", json=body)
        assert status == 400, (body, got)
        assert_openai_error(got)
        if param:
            assert got["error"]["param"] == param


async def test_framework_404_and_405_are_in_openai_shape(server):
    status, _, body = await raw(server, "GET", "/v1/nothing-here")
    assert status == 404
    assert_openai_error(body, "not_found")
    status, headers, body = await raw(server, "GET", "/v1/chat/completions")
    assert status == 405 and "POST" in headers.get("Allow", "")
    assert_openai_error(body, "method_not_allowed")


async def test_healthz_and_metrics(server):
    await assert_still_up(server)
    status, _, body = await raw(server, "GET", "/healthz")
    assert status == 200 and body["status"] == "ok" and CHAT_MODEL in body["models_loaded"]
    async with aiohttp.ClientSession() as http:
        async with http.get(server.base + "/metrics") as resp:
            assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
            text = await resp.text()
    from prometheus_client.parser import text_string_to_metric_families
    families = {f.name: f for f in text_string_to_metric_families(text)}
    depth = {s.labels["priority_class"] for s in families["confab_queue_depth"].samples}
    assert depth == {"0", "1", "2"}
    loads = [s for s in families["confab_model_loads"].samples if s.name.endswith("_total")]
    assert any(s.labels["model"] == CHAT_MODEL and s.value >= 1 for s in loads)
    assert "confab_model_evictions" in families
    assert any(s.name == "confab_job_seconds_bucket" for s in families["confab_job_seconds"].samples)
    assert any(s.name == "confab_job_queue_seconds_bucket" for s in families["confab_job_queue_seconds"].samples)
    tps = [s for s in families["confab_tokens_per_second"].samples if s.labels["model"] == CHAT_MODEL]
    assert tps and tps[0].value > 0


# -- servers of their own -----------------------------------------------------------------------------

async def test_api_keys_when_configured(tmp_path, shared_models_dir):
    settings = make_settings(tmp_path, shared_models_dir, api_keys="sk-right,sk-other", threads=2)
    s = await start_server(Engine(settings, gpu_total=None))
    try:
        with pytest.raises(openai.AuthenticationError) as e:
            await s.client("sk-wrong").models.list()
        assert e.value.status_code == 401
        assert_openai_error(e.value.response.json(), "invalid_api_key")
        assert e.value.response.json()["error"]["type"] == "invalid_request_error"   # as OpenAI's
        status, _, body = await raw(s, "GET", "/v1/models")          # no key at all
        assert status == 401
        assert_openai_error(body, "invalid_api_key")
        status, _, body = await raw(s, "GET", "/healthz")            # outside /v1: open
        assert status == 200
        assert (await s.client("sk-other").models.list()).data
        reply = await s.client("sk-right").chat.completions.create(
            model=CHAT_MODEL, messages=FRANCE, temperature=0, max_tokens=4)
        assert reply.choices[0].message.content
    finally:
        await stop_server(s)


async def test_429_with_retry_after_when_the_queue_is_full(tmp_path, shared_models_dir):
    gate = threading.Event()
    holder: dict = {}

    def load(name, device):
        assert gate.wait(30)
        return holder["engine"].dispatcher.load_model(name, device)

    settings = make_settings(tmp_path, shared_models_dir, queue_max=1, threads=2)
    engine = Engine(settings, load=load, gpu_total=None)
    holder["engine"] = engine
    s = await start_server(engine)
    try:
        client = s.client()
        first = asyncio.create_task(client.chat.completions.create(
            model=CHAT_MODEL, messages=FRANCE, max_tokens=2))           # runs: waits for its load

        async def running():
            while not engine.scheduler.running:
                await asyncio.sleep(0.01)
        await asyncio.wait_for(running(), 10)
        second = asyncio.create_task(client.chat.completions.create(
            model=CHAT_MODEL, messages=FRANCE, max_tokens=2))           # queued: the queue is full

        async def queued():
            while not engine.scheduler.waiting:
                await asyncio.sleep(0.01)
        await asyncio.wait_for(queued(), 10)
        with pytest.raises(openai.RateLimitError) as e:
            await client.chat.completions.create(model=CHAT_MODEL, messages=FRANCE, max_tokens=2)
        assert e.value.status_code == 429
        assert int(e.value.response.headers["Retry-After"]) >= 1
        assert_openai_error(e.value.response.json(), "queue_full")
        gate.set()
        for task in (first, second):
            assert (await asyncio.wait_for(task, 60)).choices[0].message.content is not None
    finally:
        gate.set()
        await stop_server(s)


async def test_a_client_that_goes_away_cancels_its_stream(server):
    body = {"model": CHAT_MODEL, "stream": True, "max_tokens": 400, "messages": [
        {"role": "user", "content": "Write a very long story about a dragon."}]}
    async with aiohttp.ClientSession() as http:
        resp = await http.post(server.base + "/v1/chat/completions", json=body)
        job_id = resp.headers["X-Confab-Job-Id"]
        await resp.content.readline()
        resp.close()
    handle = server.engine.handle(job_id)

    async def ended():
        while not handle.done:
            await asyncio.sleep(0.01)
    await asyncio.wait_for(ended(), 30)
    assert handle.status == "cancelled"
    await assert_still_up(server)
