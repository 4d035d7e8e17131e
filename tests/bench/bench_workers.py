"""Scale-out: jobs per second and p95 queue wait on one trace, run three ways: the in-process
queue with one engine, the Redis queue with one worker, and the Redis queue with two workers.
The ratios say what a second GPU host buys and what Redis costs against the in-process queue.

The backend is fake with set times (tests/scaleout/fakes.py): each job runs for its set seconds,
a model load takes LOAD_S, and each engine has room for one model at a time, so affinity
matters as it does on a real GPU. Needs redis-server (apt-get install redis-server).

Run: `python -m tests.bench.bench_workers` (or `make bench`).
"""
from __future__ import annotations

import asyncio
import random
import statistics
import time
from dataclasses import dataclass

from engine import Origin, Started
from engine.runtime.engine import Engine
from engine.scaleout.hosts import Worker, front_engine
from engine.scaleout.redis_queue import RedisQueue
from tests.conftest import make_settings
from tests.scaleout.fakes import SleepJob, install_fake_models
from tests.scaleout.fakes import fake_load as _instant_load
from tests.scaleout.servers import redis_server
from tests.scratch import scratch_dir

JOBS = 48
LOAD_S = 0.25
MODELS = ("fake-a", "fake-b", "fake-c")
RATE = 11.0          # arrivals per second: more than one engine can serve, less than two


@dataclass(frozen=True)
class Spec:
    at: float
    model: str
    cls: int
    seconds: float


def trace(seed: int = 7) -> list[Spec]:
    rng = random.Random(seed)
    at, out = 0.0, []
    for _ in range(JOBS):
        at += rng.expovariate(RATE)
        cls = rng.choices([0, 1, 2], [0.1, 0.7, 0.2])[0]
        out.append(Spec(at, rng.choice(MODELS), cls, rng.uniform(0.05, 0.15)))
    return out


def slow_load(name: str, device: str):
    time.sleep(LOAD_S)
    return _instant_load(name, device)


def settings(**kw):
    # room for one fake model (each counts 1 GiB) per engine, so that switching costs a load
    return make_settings(scratch_dir("confab-bench-"), cpu_budget_mb=1500,
                         device="cpu", keep_alive_s=0, **kw)


async def drive(engine, specs: list[Spec]) -> tuple[float, float, float]:
    """(jobs per second, p95 queue wait, mean queue wait) of the trace on `engine`."""
    t_start = time.monotonic()

    async def one(i: int, spec: Spec) -> tuple[float, float]:
        await asyncio.sleep(max(0.0, t_start + spec.at - time.monotonic()))
        submitted = time.monotonic()
        handle = await engine.submit(SleepJob(model=spec.model, seconds=spec.seconds, priority=spec.cls,
                                              text="w1 w2 w3", origin=Origin(platform="api", user=f"u{i}")))
        started = None
        async for event in handle:
            if isinstance(event, Started) and started is None:
                started = time.monotonic()
        await handle.result()
        return (started or time.monotonic()) - submitted, time.monotonic()

    results = await asyncio.wait_for(asyncio.gather(*(one(i, s) for i, s in enumerate(specs))), 120)
    waits = sorted(w for w, _ in results)
    elapsed = max(end for _, end in results) - t_start
    p95 = waits[min(len(waits) - 1, int(round(0.95 * (len(waits) - 1))))]
    return len(specs) / elapsed, p95, statistics.mean(waits)


async def in_process(specs: list[Spec]) -> tuple[float, float, float]:
    engine = Engine(settings(), load=slow_load, gpu_total=None)
    install_fake_models(engine)
    await engine.start(resume=False)
    try:
        return await drive(engine, specs)
    finally:
        await engine.close()


async def on_redis(url: str, specs: list[Spec], workers: int) -> tuple[float, float, float]:
    await RedisQueue(url).redis.flushdb()
    front = front_engine(settings(queue_url=url), RedisQueue(url))
    install_fake_models(front)
    await front.start(resume=False)
    stop = asyncio.Event()
    engines, tasks, queues = [], [], []
    try:
        for n in range(workers):
            engine = Engine(settings(queue_url=url), load=slow_load, gpu_total=None)
            await engine.start(resume=False)
            queue = RedisQueue(url)
            engines.append(engine)
            queues.append(queue)
            tasks.append(asyncio.create_task(Worker(engine, queue, f"w{n + 1}", poll_s=0.05).run(stop)))
        return await drive(front, specs)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
        for engine, queue in zip(engines, queues):
            await engine.close()
            await queue.close()
        await front.close()


async def measure() -> list[tuple[str, float, str]]:
    specs = trace()
    local = await in_process(specs)
    with redis_server() as server:
        one = await on_redis(f"{server}/1", specs, 1)
        two = await on_redis(f"{server}/2", specs, 2)
    note = f"{JOBS} jobs, {RATE:g}/s arrivals, 50-150 ms each, {LOAD_S:g} s per model load"
    return [
        ("in-process jobs/s", local[0], note),
        ("in-process p95 queue wait s", local[1], f"mean {local[2]:.3f} s"),
        ("redis 1 worker jobs/s", one[0], note),
        ("redis 1 worker p95 queue wait s", one[1], f"mean {one[2]:.3f} s"),
        ("redis 2 workers jobs/s", two[0], note),
        ("redis 2 workers p95 queue wait s", two[1], f"mean {two[2]:.3f} s"),
        ("2 workers / 1 worker jobs/s", two[0] / one[0], "what a second GPU host buys"),
        ("1 worker p95 wait / 2 workers p95 wait", one[1] / max(two[1], 1e-6), "how much sooner jobs start"),
        ("redis 1 worker / in-process jobs/s", one[0] / local[0], "the Redis queue's cost (1.0: none)"),
        ("redis 1 worker - in-process mean wait s", one[2] - local[2], "the Redis queue's added wait per job"),
    ]


def run() -> list[tuple[str, float, str]]:
    return asyncio.run(measure())


if __name__ == "__main__":
    for name, value, note in run():
        print(f"{name:<42} {value:>9.3f}  {note}")
