"""The scale-out set-up as a person runs it, with real processes and the real SmolLM2 model:
`confab worker --queue redis://…` on a "GPU host" and `confab serve --queue redis://…` on the
front. The front answers the API from the worker; killed with SIGKILL while its accepted jobs
are queued or running and started again, it still gives every job's answer, once."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import CHAT_MODEL, free_port, requires_chat_model

pytest.importorskip("redis")
pytestmark = requires_chat_model

ROOT = Path(__file__).resolve().parents[2]
BODY = {"model": CHAT_MODEL, "max_tokens": 8, "temperature": 0,
        "messages": [{"role": "user", "content": "What is the capital of France?"}]}


def confab(verb: list[str], env: dict, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "bots.cli", *verb], env=env, cwd=log.parent,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def base_env(models_dir: Path, data_dir: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONFAB_", "SLACK_", "DISCORD_"))}
    env.update(PYTHONPATH=str(ROOT), CONFAB_MODELS_DIR=str(models_dir), CONFAB_DATA_DIR=str(data_dir),
               CONFAB_THREADS="1", CONFAB_LEASE_SECONDS="5", **extra)
    return env


async def until_up(session: aiohttp.ClientSession, base: str, proc: subprocess.Popen) -> None:
    async def poll():
        while True:
            assert proc.poll() is None, "the front exited"
            try:
                async with session.get(f"{base}/v1/models") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    await asyncio.wait_for(poll(), 60)


async def until_done(session, url: str) -> dict:
    async def poll():
        while True:
            async with session.get(url) as r:
                body = await r.json()
            if body["status"] not in ("queued", "running"):
                return body
            await asyncio.sleep(0.2)
    return await asyncio.wait_for(poll(), 120)


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


async def test_front_and_worker_processes_and_a_killed_front(tmp_path, redis_url, shared_models_dir):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "confab.log"
    worker = confab(["worker", "--queue", redis_url, "--name", "gpu1"],
                    base_env(shared_models_dir, tmp_path / "gpu1"), log)
    front_env = base_env(shared_models_dir, tmp_path / "front", CONFAB_PORT=str(port))
    front = again = None
    try:
        # one at a time: both read the shared models folder as they start
        async def worker_up():
            while "taking jobs from" not in log.read_text(errors="replace"):
                assert worker.poll() is None, "the worker exited"
                await asyncio.sleep(0.1)
        await asyncio.wait_for(worker_up(), 60)
        front = confab(["serve", "--queue", redis_url], front_env, log)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as s:
            await until_up(s, base, front)
            async with s.post(f"{base}/v1/chat/completions", json=BODY) as r:
                assert r.status == 200, await r.text()
                first = await r.json()
                assert r.headers["X-Confab-Job-Id"].startswith("job_")
            assert first["choices"][0]["message"]["content"].strip()

            ids = []
            for _ in range(3):
                async with s.post(f"{base}/v1/jobs", json={"endpoint": "/v1/chat/completions",
                                                           "body": BODY}) as r:
                    assert r.status == 202
                    ids.append((await r.json())["id"])
            front.send_signal(signal.SIGKILL)
            front.wait(10)

            again = confab(["serve", "--queue", redis_url], front_env, log)
            await until_up(s, base, again)
            for job_id in ids:
                done = await until_done(s, f"{base}/v1/jobs/{job_id}")
                assert done["status"] == "done", done
                assert done["response"]["choices"][0]["message"]["content"].strip()

        import redis.asyncio as aioredis
        r = aioredis.from_url(redis_url, decode_responses=True)
        try:
            events = await r.xrange("confab:events")
        finally:
            await r.aclose()
        finished = Counter(f["job"] for _, f in events if f["kind"] in ("done", "failed"))
        assert all(finished[j] == 1 for j in ids), finished
    except BaseException:
        sys.stderr.write(log.read_text(errors="replace")[-5000:])
        raise
    finally:
        for proc in (front, again, worker):
            if proc is not None and proc.poll() is None and proc is front:
                proc.kill()
            stop(proc)
