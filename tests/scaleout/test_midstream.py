"""Failure in the middle of an answer, with the real model (issue 19, point 4): `confab worker`
processes running SmolLM2 in their own llama-server take a chat job from a real redis-server, at
a non-zero temperature; once tokens have reached the person (the test asserts that they had),
the worker is killed, or Redis goes away and comes back. The answer reaches the person once,
and it is the text they were already shown, continued: never two answers, never a splice of two
different ones.

What the engine does (engine/scaleout/hosts.py): a job whose worker stops renewing its lease
goes back to the queue and runs again; the front gives every chat job a seed from its id, so the
second attempt says the same words, and shows only what the first had not shown yet. Redis is
run as deploy/compose.yaml runs it, with its append-only file, so that it comes back with its
data."""
from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from engine import ChatJob, ChatMessage, Origin, Token
from tests.conftest import CHAT_MODEL, free_port, make_settings, requires_chat_model

pytest.importorskip("redis")
from engine.runtime.engine import Engine
from engine.scaleout.hosts import front_engine
from engine.scaleout.redis_queue import RedisQueue
from tests.scaleout.test_cli_scaleout import base_env, confab, stop

pytestmark = [requires_chat_model, pytest.mark.timeout(600)]

LEASE_S = 5.0           # as base_env sets it: a dead worker's job is taken again within seconds
SYSTEM = ChatMessage("system", "You are a helpful assistant.")


class Redis:
    """A redis-server on a fixed port and folder, with its append-only file (as compose runs
    it), that the test can kill and start again with its data."""

    def __init__(self, folder: Path):
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("redis-server is not installed (apt-get install redis-server; `make system-deps`)")
        self.exe, self.folder, self.port = exe, folder, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([self.exe, "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "yes", "--appendfsync", "always",
                                      "--dir", str(self.folder)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
            assert time.monotonic() < deadline and self.proc.poll() is None, "redis-server did not start"
            time.sleep(0.05)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def forget(self) -> None:
        """Lose the data: the next start is a Redis run without an append-only file."""
        shutil.rmtree(self.folder / "appendonlydir", ignore_errors=True)
        (self.folder / "appendonly.aof").unlink(missing_ok=True)
        (self.folder / "dump.rdb").unlink(missing_ok=True)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()


class Rig:
    def __init__(self, tmp_path: Path, models_dir: Path):
        self.tmp_path, self.models_dir = tmp_path, models_dir
        self.log = tmp_path / "workers.log"
        self.redis = Redis(tmp_path)
        self.workers: dict[str, subprocess.Popen] = {}
        self.front: Engine | None = None

    async def start(self, workers: tuple[str, ...]) -> None:
        self.redis.start()
        for name in workers:      # one at a time: they read the shared models folder as they start
            env = base_env(self.models_dir, self.tmp_path / name)
            self.workers[name] = confab(["worker", "--queue", self.redis.url, "--name", name], env, self.log)
            await asyncio.wait_for(self._up(name), 120)
        settings = make_settings(self.tmp_path / "front", self.models_dir, queue_url=self.redis.url,
                                 lease_s=LEASE_S)
        self.front = front_engine(settings, RedisQueue(self.redis.url))
        await self.front.start()

    async def _up(self, name: str) -> None:
        while f"worker {name} taking jobs from" not in self.log.read_text(errors="replace"):
            assert self.workers[name].poll() is None, f"the worker {name} exited"
            await asyncio.sleep(0.1)

    async def owner(self, job_id: str) -> str:
        """The worker holding the job's lease now."""
        async def held():
            while True:
                token = await self.front.dispatcher.queue.redis.hget(self.front.dispatcher.queue.owner, job_id)
                if token:
                    return token.split("|")[0]
                await asyncio.sleep(0.05)
        return await asyncio.wait_for(held(), 30)

    async def events(self) -> list[dict]:
        return [f for _, f in await self.front.dispatcher.queue.read_events("0-0", block_ms=10, count=100_000)]

    async def close(self) -> None:
        if self.front is not None:
            try:
                await asyncio.wait_for(self.front.close(), 60)
            except asyncio.TimeoutError:      # say where it hangs
                for task in asyncio.all_tasks():
                    task.print_stack(file=sys.stderr)
                raise
        for proc in self.workers.values():
            stop(proc)
        self.redis.close()


@contextlib.asynccontextmanager
async def rig(tmp_path, models_dir, workers):
    r = Rig(tmp_path, models_dir)
    try:
        await r.start(workers)
        yield r
    except BaseException:
        sys.stderr.write(r.log.read_text(errors="replace")[-5000:] if r.log.exists() else "")
        raise
    finally:
        await r.close()


def story(user: str) -> ChatJob:
    # a non-zero temperature, as people get by default (0.8 here, so that two unseeded
    # attempts would surely differ), and long enough to be cut in the middle
    return ChatJob(model=CHAT_MODEL, temperature=0.8, max_tokens=60, origin=Origin(platform="api", user=user),
                   messages=[SYSTEM, ChatMessage("user", "Write a short story about a lighthouse keeper.")])


async def watch(handle, after: int, then) -> tuple[str, str]:
    """All the text the person is shown, and what they had been shown when `then()` was
    called, after `after` tokens."""
    shown, at_cut = [], None
    async for event in handle:
        if isinstance(event, Token) and event.text:
            shown.append(event.text)
            if len(shown) == after:
                at_cut = "".join(shown)
                await then()
    return "".join(shown), at_cut


def one_answer(events: list[dict], job_id: str) -> None:
    finished = Counter(f["job"] for f in events if f["kind"] in ("done", "failed"))
    assert finished[job_id] == 1, finished


async def test_a_worker_killed_after_tokens_streamed_answers_once_with_what_was_shown(tmp_path, shared_models_dir):
    async with rig(tmp_path, shared_models_dir, ("w1", "w2")) as r:
        handle = await r.front.submit(story("alice"))
        killed = []

        async def kill_its_worker():
            name = await r.owner(handle.id)
            r.workers[name].send_signal(signal.SIGKILL)
            r.workers[name].wait(10)
            killed.append(name)
        shown, at_cut = await asyncio.wait_for(watch(handle, 5, kill_its_worker), 300)
        result = await asyncio.wait_for(handle.result(), 60)
        assert killed and at_cut, "the worker was never killed mid-answer"
        assert len(at_cut) > 0                           # tokens had reached the person
        assert shown.startswith(at_cut)
        assert result.text == shown                      # what was shown is the answer, whole
        events = await r.events()
        one_answer(events, handle.id)
        assert any(f["kind"] == "requeued" and f["job"] == handle.id for f in events)
        assert len(result.text) > len(at_cut)            # the second attempt went on past the cut
        assert (await r.front.store.get_job(handle.id))["status"] == "done"


@pytest.mark.parametrize("away_s", [1.0, 2 * LEASE_S])
async def test_redis_going_away_mid_answer_and_back_answers_once_with_what_was_shown(tmp_path, shared_models_dir,
                                                                                     away_s):
    """Away for less than a lease (the worker goes on), and for longer (the job may run again)."""
    async with rig(tmp_path, shared_models_dir, ("w1",)) as r:
        handle = await r.front.submit(story("bob"))

        async def redis_away():
            r.redis.kill()
            await asyncio.sleep(away_s)
            r.redis.start()
        shown, at_cut = await asyncio.wait_for(watch(handle, 5, redis_away), 300)
        result = await asyncio.wait_for(handle.result(), 120)
        assert at_cut and shown.startswith(at_cut)
        assert result.text == shown
        one_answer(await r.events(), handle.id)
        assert (await r.front.store.get_job(handle.id))["status"] == "done"
        # and the queue works on: the next job is answered
        after = await r.front.submit(story("bob"))
        assert (await asyncio.wait_for(after.result(), 180)).text


async def test_redis_coming_back_without_its_data_mid_answer_runs_the_job_again_and_answers_once(
        tmp_path, shared_models_dir):
    """A Redis run without persistence loses the queue when it restarts: the front notices the
    new run and queues its unfinished jobs again, and the answer continues what was shown."""
    async with rig(tmp_path, shared_models_dir, ("w1",)) as r:
        handle = await r.front.submit(story("carol"))

        async def redis_loses_everything():
            r.redis.kill()
            r.redis.forget()
            r.redis.start()
        shown, at_cut = await asyncio.wait_for(watch(handle, 5, redis_loses_everything), 300)
        result = await asyncio.wait_for(handle.result(), 180)
        assert at_cut and shown.startswith(at_cut)
        assert result.text == shown and len(result.text) > len(at_cut)
        assert (await r.front.store.get_job(handle.id))["status"] == "done"
        after = await r.front.submit(story("carol"))
        assert (await asyncio.wait_for(after.result(), 180)).text

