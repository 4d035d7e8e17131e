"""/v1/jobs: the asynchronous form of an endpoint, which survives a restart."""
from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from bots.api.app import create_app
from engine import Engine
from tests.conftest import CHAT_MODEL, make_settings, requires_chat_model

pytestmark = requires_chat_model

BODY = {"model": CHAT_MODEL, "temperature": 0, "max_tokens": 12,
        "messages": [{"role": "system", "content": "You are a helpful assistant."},
                     {"role": "user", "content": "What is the capital of France?"}]}


async def serve(engine):
    runner = web.AppRunner(create_app(engine))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"


async def wait_done(session, url, headers=None, timeout=60):
    async def poll():
        while True:
            async with session.get(url, headers=headers) as r:
                data = await r.json()
                if data["status"] in ("done", "failed", "cancelled"):
                    return data
            await asyncio.sleep(0.1)
    return await asyncio.wait_for(poll(), timeout)


async def test_job_answers_at_once_then_gives_the_endpoints_response(tmp_path, shared_models_dir):
    engine = Engine(make_settings(tmp_path, shared_models_dir))
    await engine.start()
    runner, base = await serve(engine)
    try:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{base}/v1/jobs", json={"endpoint": "/v1/chat/completions", "body": BODY}) as r:
                assert r.status == 202
                created = await r.json()
                assert created["status"] == "queued" and created["id"] == r.headers["X-Confab-Job-Id"]
            done = await wait_done(s, f"{base}/v1/jobs/{created['id']}")
            assert done["status"] == "done"
            response = done["response"]
            assert response["object"] == "chat.completion"
            assert "Paris" in response["choices"][0]["message"]["content"]
            assert response["usage"]["completion_tokens"] > 0
            async with s.post(f"{base}/v1/chat/completions", json=BODY) as r:
                assert r.status == 200 and r.headers["X-Confab-Job-Id"].startswith("job_")
    finally:
        await runner.cleanup()
        await engine.close()


@pytest.mark.parametrize("payload, param", [
    ({"endpoint": "/v1/nothing", "body": {}}, "endpoint"),
    ({"endpoint": "/v1/chat/completions", "body": "text"}, "body"),
    ({"endpoint": "/v1/chat/completions", "body": {**BODY, "stream": True}}, "body.stream"),
])
async def test_bad_job_requests_get_a_400_in_openai_shape(tmp_path, shared_models_dir, payload, param):
    engine = Engine(make_settings(tmp_path, shared_models_dir))
    await engine.start()
    runner, base = await serve(engine)
    try:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{base}/v1/jobs", json=payload) as r:
                assert r.status == 400
                assert (await r.json())["error"]["param"] == param
            async with s.get(f"{base}/v1/jobs/job_missing") as r:
                assert r.status == 404 and "error" in await r.json()
    finally:
        await runner.cleanup()
        await engine.close()


async def test_another_keys_job_is_not_visible(tmp_path, shared_models_dir):
    engine = Engine(make_settings(tmp_path, shared_models_dir, api_keys=("alice-key", "bob-key")))
    await engine.start()
    runner, base = await serve(engine)
    alice = {"Authorization": "Bearer alice-key"}
    try:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{base}/v1/jobs", headers=alice,
                              json={"endpoint": "/v1/chat/completions", "body": BODY}) as r:
                job_id = (await r.json())["id"]
            async with s.get(f"{base}/v1/jobs/{job_id}", headers={"Authorization": "Bearer bob-key"}) as r:
                assert r.status == 404
            assert (await wait_done(s, f"{base}/v1/jobs/{job_id}", alice))["status"] == "done"
    finally:
        await runner.cleanup()
        await engine.close()


async def test_an_accepted_job_runs_after_a_restart(tmp_path, shared_models_dir):
    settings = make_settings(tmp_path, shared_models_dir)
    first = Engine(settings)            # never started: the job is accepted but cannot run
    runner, base = await serve(first)
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{base}/v1/jobs", json={"endpoint": "/v1/chat/completions", "body": BODY}) as r:
            job_id = (await r.json())["id"]
    await runner.cleanup()
    await first.close()

    second = Engine(settings)
    await second.start()
    runner, base = await serve(second)
    try:
        async with aiohttp.ClientSession() as s:
            done = await wait_done(s, f"{base}/v1/jobs/{job_id}")
        assert done["status"] == "done"
        assert "Paris" in done["response"]["choices"][0]["message"]["content"]
    finally:
        await runner.cleanup()
        await second.close()
