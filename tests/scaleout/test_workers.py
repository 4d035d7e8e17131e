"""One front and two workers on a real redis-server, with the fake backend of fakes.py.

- Real worker processes (`confab worker` code with the fake backend), one killed with SIGKILL
  while it runs a job: every job is answered, once, with its whole text streamed once.
- In-process workers: class 0 goes first and class 2 last across both workers; inside class 1 a
  worker prefers what *it* has loaded, until aging says the oldest job goes first.
"""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("redis")

from engine import JobCancelled, Origin, Token  # noqa: E402
from engine.runtime.engine import Engine  # noqa: E402
from engine.scaleout.hosts import Worker, front_engine  # noqa: E402
from engine.scaleout.redis_queue import RedisQueue  # noqa: E402
from tests.conftest import make_settings  # noqa: E402
from tests.scaleout.fakes import SleepJob, fake_load, install_fake_models  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


async def start_front(tmp_path, url, **overrides) -> Engine:
    settings = make_settings(tmp_path / "front", queue_url=url, **overrides)
    front = front_engine(settings, RedisQueue(url))
    install_fake_models(front)
    await front.start()
    return front


async def streamed(handle) -> str:
    return "".join([e.text async for e in handle if isinstance(e, Token)])


def start_worker(url: str, name: str, data: Path, log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    env = {k: v for k, v in env.items() if not k.startswith("CONFAB_")}
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "tests.scaleout.fake_worker", "--queue", url,
                                 "--name", name, "--data-dir", str(data), "--lease", "1.5"],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)


async def test_a_worker_killed_mid_job_loses_nothing_and_nothing_is_answered_twice(tmp_path, redis_url):
    front = await start_front(tmp_path, redis_url)
    log = tmp_path / "workers.log"
    workers = {name: start_worker(redis_url, name, tmp_path / name, log) for name in ("w1", "w2")}
    try:
        texts = {}
        handles = []
        for i in range(8):
            text = f"answer {i} " + " ".join(f"w{i}{k}" for k in range(8))
            job = SleepJob(model="fake-a" if i % 2 else "fake-b", seconds=0.8, text=text,
                           origin=Origin(platform="api", user=f"user{i}"))
            handles.append(await front.submit(job))
            texts[job.id] = text
        streams = {h.id: asyncio.create_task(streamed(h)) for h in handles}

        async def w1_runs_a_job():
            while True:
                owners = await front.dispatcher.queue.redis.hvals(front.dispatcher.queue.owner)
                if any(o.startswith("w1|") for o in owners):
                    return
                await asyncio.sleep(0.05)
        await asyncio.wait_for(w1_runs_a_job(), 30)
        await asyncio.sleep(0.3)                      # mid-job: some tokens are out
        workers["w1"].send_signal(signal.SIGKILL)

        results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 60)
        for handle, result in zip(handles, results):
            assert result.text == texts[handle.id]
            assert await asyncio.wait_for(streams[handle.id], 5) == texts[handle.id]
            assert (await front.store.get_job(handle.id))["status"] == "done"
        events = await front.dispatcher.queue.read_events("0-0", block_ms=10, count=100_000)
        done = Counter(f["job"] for _, f in events if f["kind"] in ("done", "failed"))
        assert done == Counter({h.id: 1 for h in handles})
        requeued = [f["job"] for _, f in events if f["kind"] == "requeued"]
        assert requeued, "the killed worker's job never went back to the queue"
        assert await front.dispatcher.queue.redis.hlen(front.dispatcher.queue.results) == 0   # the front took them all
    except BaseException:
        sys.stderr.write(log.read_text(errors="replace")[-4000:] if log.exists() else "")
        raise
    finally:
        for proc in workers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in workers.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        await front.close()


class Rig:
    """A front and two in-process workers, each with its own engine and fake models."""

    def __init__(self, front, workers, engines, tasks, stop):
        self.front, self.workers, self.engines, self.tasks, self.stop = front, workers, engines, tasks, stop

    def order(self) -> list[tuple[str, str]]:
        taken = [(when, jid, w.name) for w in self.workers for jid, _, when in w.taken]
        return [(jid, name) for _, jid, name in sorted(taken)]


async def start_rig(tmp_path, url, aging_s: float) -> Rig:
    front = await start_front(tmp_path, url, aging_s=aging_s)
    stop = asyncio.Event()
    engines, workers, tasks = [], [], []
    for name in ("w1", "w2"):
        settings = make_settings(tmp_path / name, queue_url=url, aging_s=aging_s, lease_s=5.0)
        engine = Engine(settings, load=fake_load, gpu_total=None)
        await engine.start(resume=False)
        worker = Worker(engine, RedisQueue(url), name, poll_s=0.1)
        engines.append(engine)
        workers.append(worker)
    return Rig(front, workers, engines, tasks, stop)


async def close_rig(rig: Rig) -> None:
    # each step bounded, so that a close that hangs says which one (seen once in CI: 300 s)
    rig.stop.set()
    await asyncio.wait_for(asyncio.gather(*rig.tasks, return_exceptions=True), 15)
    for worker, engine in zip(rig.workers, rig.engines):
        await asyncio.wait_for(engine.close(), 60)
        await asyncio.wait_for(worker.queue.close(), 30)
    await asyncio.wait_for(rig.front.close(), 60)


def job(name: str, model: str, cls: int, seconds: float = 0.2) -> SleepJob:
    return SleepJob(model=model, seconds=seconds, text=name, priority=cls,
                    origin=Origin(platform="api", user=name))


async def warm_up(rig: Rig, seconds_a: float, seconds_b: float):
    """w1 loads fake-a and w2 fake-b, each running one job for the given seconds."""
    front = rig.front
    first_a = await front.submit(job("warm-a", "fake-a", 1, seconds=seconds_a))
    rig.tasks.append(asyncio.create_task(rig.workers[0].run(rig.stop)))
    await asyncio.wait_for(_until(lambda: rig.workers[0].taken), 10)
    first_b = await front.submit(job("warm-b", "fake-b", 1, seconds=seconds_b))
    rig.tasks.append(asyncio.create_task(rig.workers[1].run(rig.stop)))
    await asyncio.wait_for(_until(lambda: rig.workers[1].taken), 10)
    return [first_a, first_b]


async def run_all(rig: Rig, handles) -> list[tuple[str, str]]:
    await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 30)
    for h in handles:
        assert (await rig.front.store.get_job(h.id))["status"] == "done"
    names = {h.id: h.job.text for h in handles}
    return [(names[jid], w) for jid, w in rig.order()]


async def test_priority_and_affinity_hold_across_workers(tmp_path, redis_url):
    rig = await asyncio.wait_for(start_rig(tmp_path, redis_url, aging_s=30.0), 60)
    try:
        warm = await warm_up(rig, 0.8, 2.5)          # w1 is free again first
        queued = [await rig.front.submit(j) for j in (           # queued while both are busy
            job("bg", "fake-a", 2), job("old-c", "fake-c", 1), job("new-a", "fake-a", 1),
            job("dm", "fake-b", 0))]
        order = await run_all(rig, warm + queued)
        ran = [n for n, _ in order]
        assert ran[:2] == ["warm-a", "warm-b"]
        assert ran[2] == "dm", order                    # class 0 first, on whichever worker is free
        assert order[3] == ("new-a", "w1"), order       # affinity to what w1 has loaded
        assert ran[-1] == "bg", order                   # class 2 last
    finally:
        await close_rig(rig)


@pytest.mark.parametrize("aging_s", [30.0, 0.5])
async def test_aging_bounds_what_affinity_costs_across_workers(tmp_path, redis_url, aging_s):
    rig = await start_rig(tmp_path, redis_url, aging_s=aging_s)
    try:
        warm = await warm_up(rig, 0.3, 4.0)          # w2 stays busy throughout
        queued = [await rig.front.submit(j) for j in (
            job("old-c", "fake-c", 1), *(job(f"a{i}", "fake-a", 1, seconds=0.25) for i in range(1, 5)))]
        order = await run_all(rig, warm + queued)
        on_w1 = [n for n, w in order if w == "w1"][1:]
        assert sorted(on_w1) == ["a1", "a2", "a3", "a4", "old-c"], order
        if aging_s >= 30:     # never passed over long enough: w1 keeps to its loaded model
            assert on_w1 == ["a1", "a2", "a3", "a4", "old-c"], order
        else:                 # later fake-a jobs ran 0.5 s before it: then it goes first
            assert on_w1[0] == "a1" and on_w1.index("old-c") < on_w1.index("a4"), order
    finally:
        await close_rig(rig)


async def _until(predicate, every: float = 0.02) -> None:
    while not predicate():
        await asyncio.sleep(every)


async def test_the_front_knows_each_queued_jobs_place_in_line(tmp_path, redis_url):
    front = await start_front(tmp_path, redis_url)       # no worker: everything waits
    try:
        handles = [await front.submit(job(f"j{i}", "fake-a", cls)) for i, cls in enumerate((1, 2, 1, 0))]
        await asyncio.wait_for(_until(lambda: all(front.position(h.id) for h in handles)), 10)
        places = [front.position(h.id)[0] for h in handles]
        assert places == [2, 4, 3, 1]
        await handles[3].cancel()
        assert handles[3].done and isinstance(handles[3].error(), JobCancelled)
    finally:
        await front.close()


async def test_cancelling_a_job_running_on_a_worker_stops_it_there(tmp_path, redis_url):
    rig = await start_rig(tmp_path, redis_url, aging_s=30.0)
    try:
        long = await rig.front.submit(SleepJob(model="fake-a", seconds=20.0, text=" ".join(["word"] * 200),
                                               origin=Origin(platform="api", user="alice")))
        rig.tasks.append(asyncio.create_task(rig.workers[0].run(rig.stop)))
        await asyncio.wait_for(_until(lambda: long.status == "running"), 10)
        there = rig.engines[0].handle(long.id)           # the job as the worker runs it
        assert there is not None and not there.done
        assert await long.cancel()
        with pytest.raises(JobCancelled):
            await asyncio.wait_for(long.result(), 10)
        # stopped on the worker, not left to run its 20 s there: the worker's own handle ends
        # cancelled (a job the cancel never reached would end done, its 200 words all out)
        with pytest.raises(JobCancelled):
            await asyncio.wait_for(there.result(), 60)
        assert (await rig.front.store.get_job(long.id))["status"] == "cancelled"
    finally:
        await close_rig(rig)


async def test_jobs_accepted_while_redis_is_down_run_when_it_is_back(tmp_path):
    from tests.conftest import free_port
    from tests.scaleout.servers import RedisMissing, redis_server
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    front = await start_front(tmp_path, url)            # Redis is not there yet
    stop, tasks = asyncio.Event(), []
    engine = queue = None
    try:
        handle = await front.submit(job("early", "fake-a", 1))   # stored; waits for the queue
        await asyncio.sleep(0.5)
        assert not handle.done
        try:
            server = redis_server(port=port)
            server.__enter__()
        except RedisMissing as e:
            pytest.skip(str(e))
        try:
            engine = Engine(make_settings(tmp_path / "w1", queue_url=url), load=fake_load, gpu_total=None)
            await engine.start(resume=False)
            queue = RedisQueue(url)
            tasks.append(asyncio.create_task(Worker(engine, queue, "w1", poll_s=0.1).run(stop)))
            result = await asyncio.wait_for(handle.result(), 20)
            assert result.text == "early"
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 15)
            if engine:
                await engine.close()
            if queue:
                await queue.close()
            await front.close()
            front = None
            server.__exit__(None, None, None)
    finally:
        if front is not None:
            await front.close()
