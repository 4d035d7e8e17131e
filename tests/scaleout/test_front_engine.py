"""The front host's engine is an Engine composed with the Redis dispatcher (issue 15): it has no
model manager, scheduler or model thread of its own, and its doors see nothing run or loaded
there; an engine without a queue runs its jobs itself."""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from engine import Origin
from engine.runtime.engine import Engine
from engine.runtime.local import LocalDispatcher
from engine.runtime.memory import ModelManager
from engine.runtime.scheduler import Scheduler
from tests.conftest import make_settings
from tests.scaleout.fakes import SleepJob, install_fake_models

pytest.importorskip("redis")
from engine.scaleout.hosts import RedisDispatcher, Worker, engine_for  # noqa: E402


async def test_the_front_builds_no_local_parts_and_still_queues(tmp_path, redis_url):
    front = engine_for(make_settings(tmp_path / "front", queue_url=redis_url))
    install_fake_models(front)
    await front.start()
    try:
        here = front.dispatcher
        assert isinstance(here, RedisDispatcher)
        local_parts = (ModelManager, Scheduler, ThreadPoolExecutor)
        assert not [v for v in vars(here).values() if isinstance(v, local_parts)]
        with pytest.raises(AttributeError):
            front.models
        with pytest.raises(AttributeError):
            front.scheduler
        assert not [t for t in asyncio.all_tasks() if t.get_name() == "confab-scheduler"]

        handle = await front.submit(SleepJob(model="fake-a", origin=Origin(platform="api", user="u")))

        async def queued():
            while not await here.queue.waiting_entries():
                await asyncio.sleep(0.05)
        await asyncio.wait_for(queued(), 10)
        assert [h.id for h in front.active_jobs()] == [handle.id]
        assert (here.waiting, here.running, here.resident_names(), here.budgets) == ([], [], [], {})
        with pytest.raises(TypeError):
            Worker(front, here.queue)
    finally:
        await front.close()


async def test_without_a_queue_the_engine_runs_its_jobs_itself(tmp_path):
    engine = engine_for(make_settings(tmp_path))
    try:
        assert type(engine) is Engine and isinstance(engine.dispatcher, LocalDispatcher)
        assert engine.models is engine.dispatcher.models
        assert engine.scheduler is engine.dispatcher.scheduler
    finally:
        await engine.close()


def test_an_engine_given_a_dispatcher_refuses_the_local_dispatchers_settings(tmp_path):
    settings = make_settings(tmp_path / "front", queue_url="redis://127.0.0.1:1")
    with pytest.raises(TypeError, match="local dispatcher"):
        Engine(settings, load=lambda name, device: (None, 0),
               dispatcher=lambda engine: RedisDispatcher(engine, None))
