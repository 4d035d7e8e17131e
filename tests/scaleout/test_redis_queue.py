"""The Redis queue's scripts against a real redis-server: the Lua policy agrees with
scheduler.pick_next on random queues, leases run out and return jobs, only the lease holder
may deliver, and cancel works queued and running."""
from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.runtime.scheduler import Entry, Policy, pick_next
from engine.scaleout.redis_queue import RedisQueue

pytest.importorskip("redis")

MODELS = ["a", "b", "c"]


def _entries(draw_list) -> list[Entry]:
    return [Entry(f"job_{i}", cls, model, f"u{i % 3}", arrived, seq=i + 1, passed_s=passed)
            for i, (cls, model, arrived, passed) in enumerate(draw_list)]


queues = st.lists(st.tuples(st.integers(0, 2), st.sampled_from(MODELS),
                            st.floats(0, 400, allow_nan=False, allow_infinity=False),
                            st.one_of(st.just(0.0), st.floats(0, 120, allow_nan=False))),
                  min_size=1, max_size=25)


def test_lua_policy_agrees_with_pick_next(redis_url):
    """One loop and one connection for all examples (hypothesis runs the body synchronously)."""
    loop = asyncio.new_event_loop()
    queue = RedisQueue(redis_url)

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(queue_=queues, resident=st.sets(st.sampled_from(MODELS)),
           now=st.floats(0, 800, allow_nan=False), aging=st.floats(0, 100, allow_nan=False),
           promote=st.floats(0, 300, allow_nan=False),
           ties=st.booleans())
    def check(queue_, resident, now, aging, promote, ties):
        entries = _entries(queue_)
        if ties:   # the same arrival time: order by sequence, as pick_next does
            for e in entries:
                e.arrived = 10.0
        policy = Policy(aging_s=aging, promote_s=promote)
        expected = pick_next(entries, resident, now, policy).job_id

        async def lua():
            await queue.redis.delete(queue.waiting)
            await queue.redis.hset(queue.waiting, mapping={
                e.job_id: json.dumps({"id": e.job_id, "cls": e.cls, "model": e.model, "user": e.user,
                                      "arrived": repr(e.arrived), "seq": e.seq,
                                      "passed": repr(e.passed_s)}) for e in entries})
            return await queue.peek(resident, policy, now)
        assert loop.run_until_complete(lua()) == expected

    try:
        check()
    finally:
        loop.run_until_complete(queue.redis.flushdb())
        loop.run_until_complete(queue.close())
        loop.close()


async def push(queue: RedisQueue, job_id: str, cls: int = 1, model: str = "a", user: str = "u"):
    return await queue.push(job_id, cls, model, user, json.dumps({"id": job_id}))


async def test_take_by_class_then_affinity_then_aging(redis_url):
    queue = RedisQueue(redis_url)
    policy = Policy(aging_s=0.6, promote_s=60)
    try:
        await push(queue, "bg", cls=2, model="a")
        await push(queue, "b1", model="b")
        await push(queue, "a1", model="a")
        await push(queue, "dm", cls=0, model="b")
        assert (await queue.take("w1", ["a"], policy, 30)).entry.job_id == "dm"     # class 0 first
        assert (await queue.take("w1", ["a"], policy, 30)).entry.job_id == "a1"     # affinity
        await push(queue, "b2", model="b")
        await push(queue, "a2", model="a")
        await push(queue, "a3", model="a")
        a2 = await queue.take("w1", ["a"], policy, 30)
        assert a2.entry.job_id == "a2"                                              # affinity again
        assert await queue.finish(a2, "done", "{}", service_s=0.7)   # b1 was passed over for 0.7 s
        assert (await queue.take("w1", ["a"], policy, 30)).entry.job_id == "b1"    # aged: it goes first
        assert (await queue.take("w2", ["b"], policy, 30)).entry.job_id == "b2"
        assert (await queue.take("w1", ["a"], policy, 30)).entry.job_id == "a3"
        assert (await queue.take("w1", ["a"], policy, 30)).entry.job_id == "bg"      # class 2 last
        assert await queue.take("w1", ["a"], policy, 30) is None
    finally:
        await queue.close()


async def test_an_expired_lease_returns_the_job_and_the_old_holder_cannot_deliver(redis_url):
    queue = RedisQueue(redis_url)
    policy = Policy()
    try:
        assert await push(queue, "j1") is None
        first = await queue.take("w1", [], policy, 0.3)
        assert first.attempt == 1 and json.loads(first.job)["id"] == "j1"
        assert await push(queue, "j1") is None            # already leased: not queued twice
        assert await queue.take("w2", [], policy, 30) is None
        assert await queue.renew(first, 0.3) == 1
        await asyncio.sleep(0.4)                          # w1 died: its lease runs out
        second = await queue.take("w2", [], policy, 30)
        assert second.entry.job_id == "j1" and second.attempt == 2
        assert second.entry.arrived == first.entry.arrived    # it keeps its place by age
        assert await queue.renew(first, 30) == 0
        assert not await queue.publish(first, ['"late"'])
        assert not await queue.finish(first, "done", '"stale"')
        assert await queue.publish(second, ['"token"'])
        assert await queue.finish(second, "done", '"answer"')
        assert not await queue.finish(second, "done", '"again"')   # one result, once
        kinds = [(f["kind"], f["attempt"]) for _, f in await queue.read_events("0-0", block_ms=10)]
        assert kinds == [("requeued", "1"), ("event", "2"), ("done", "2")]
        assert await push(queue, "j1") == '"answer"'     # a front that missed it gets the result
    finally:
        await queue.close()


async def test_cancel_queued_and_running(redis_url):
    queue = RedisQueue(redis_url)
    try:
        await push(queue, "q")
        await push(queue, "r")
        running = await queue.take("w1", [], Policy(), 30)
        other = "q" if running.entry.job_id == "r" else "r"
        assert await queue.cancel(other) == 1               # dropped from the queue
        assert await queue.take("w1", [], Policy(), 30) is None
        assert await queue.cancel(running.entry.job_id) == 2   # flagged for its worker
        assert await queue.renew(running, 30) == 2
        assert await queue.cancel("nope") == 0
    finally:
        await queue.close()


async def test_finish_charges_its_run_time_to_the_older_jobs_it_went_before(redis_url):
    """The same rule as Scheduler.finished: older jobs of its class, class 2 counting as 1."""
    queue = RedisQueue(redis_url)
    try:
        await push(queue, "old1", cls=1)
        await push(queue, "old2", cls=2)
        await push(queue, "old0", cls=0)
        await push(queue, "runs", cls=1, model="b")
        await push(queue, "new1", cls=1)
        await queue.redis.hdel(queue.waiting, "old0")      # (a class 0 job would have run first)
        arrived = json.loads(await queue.redis.hget(queue.waiting, "old1"))["arrived"]
        raw = await queue.redis.hget(queue.waiting, "runs")
        await queue.redis.hdel(queue.waiting, "runs")
        await queue.redis.hset(queue.inflight, "runs", raw)
        await queue.redis.hset(queue.owner, "runs", "w1|1")
        from engine.scaleout.redis_queue import Taken, entry_of
        taken = Taken(entry_of(raw), 1, "w1|1", "{}")
        assert await queue.finish(taken, "done", "{}", service_s=0.25)
        passed = {k: json.loads(v).get("passed") for k, v in (await queue.redis.hgetall(queue.waiting)).items()}
        assert float(passed["old1"]) == 0.25 and float(passed["old2"]) == 0.25
        assert passed["new1"] is None
        assert json.loads(await queue.redis.hget(queue.waiting, "old1"))["arrived"] == arrived
    finally:
        await queue.close()


def test_lua_charging_agrees_with_scheduler_finished(redis_url):
    """What a finished job charges to the jobs it went before: Redis and Scheduler.finished."""
    from engine.runtime.scheduler import Scheduler
    from engine.scaleout.redis_queue import Taken
    loop = asyncio.new_event_loop()
    queue = RedisQueue(redis_url)

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(queue_=queues, ran=st.tuples(st.integers(0, 2), st.floats(0, 400, allow_nan=False)),
           service=st.floats(0.001, 50, allow_nan=False))
    def check(queue_, ran, service):
        entries = _entries(queue_)
        finished = Entry("ran", ran[0], "a", "u", ran[1], seq=len(entries) // 2 + 1)
        sched = Scheduler(None, lambda: [])
        sched._waiting = [Entry(e.job_id, e.cls, e.model, e.user, e.arrived, e.seq, passed_s=e.passed_s)
                          for e in entries]
        sched.finished(finished, service)
        expected = {e.job_id: e.passed_s for e in sched._waiting}

        def raw(e):
            return json.dumps({"id": e.job_id, "cls": e.cls, "model": e.model, "user": e.user,
                               "arrived": repr(e.arrived), "seq": e.seq, "passed": repr(e.passed_s)})

        async def lua():
            await queue.redis.flushdb()
            await queue.redis.hset(queue.waiting, mapping={e.job_id: raw(e) for e in entries})
            await queue.redis.hset(queue.inflight, "ran", raw(finished))
            await queue.redis.hset(queue.owner, "ran", "w|1")
            assert await queue.finish(Taken(finished, 1, "w|1", "{}"), "done", "{}", service)
            return {k: float(json.loads(v)["passed"])
                    for k, v in (await queue.redis.hgetall(queue.waiting)).items()}
        assert loop.run_until_complete(lua()) == expected

    try:
        check()
    finally:
        loop.run_until_complete(queue.redis.flushdb())
        loop.run_until_complete(queue.close())
        loop.close()
