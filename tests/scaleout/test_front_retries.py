"""What the front shows of a job that ran twice (its first worker stopped mid-answer), given the
events two attempts send through a real redis-server. The seed from the job's id makes the second
attempt say the same words only where the numbers come out the same (another build, device or
batch may not): a second attempt that says something else is never spliced onto what was shown.
tests/scaleout/test_midstream.py runs the real model through the same path."""
from __future__ import annotations

import asyncio

import pytest

from engine import Origin, Token, wire
from engine.errors import BackendFailed
from engine.jobs import ChatResult, Usage
from tests.conftest import make_settings
from tests.scaleout.fakes import SleepJob, install_fake_models

pytest.importorskip("redis")
from engine.scaleout.hosts import front_engine
from engine.scaleout.redis_queue import RedisQueue


async def attempts(tmp_path, redis_url, events: list[tuple], final: tuple[int, str]):
    """Feed the front tokens of (attempt, text[, number]), then attempt `final[0]`'s result;
    returns what the person was shown and the outcome (the result, or the error)."""
    front = front_engine(make_settings(tmp_path / "front", queue_url=redis_url), RedisQueue(redis_url))
    install_fake_models(front)
    await front.start()
    try:
        handle = await front.submit(SleepJob(model="fake-a", text="-", origin=Origin(platform="api", user="u")))

        async def shown() -> str:
            return "".join([e.text async for e in handle if isinstance(e, Token)])
        watching = asyncio.create_task(shown())
        for attempt, text, *n in events:
            await front.dispatcher._on_event({"job": handle.id, "kind": "event", "attempt": str(attempt),
                                   "data": wire.dumps(Token(text)), **({"n": str(n[0])} if n else {})})
        attempt, text = final
        await front.dispatcher._on_event({"job": handle.id, "kind": "done", "attempt": str(attempt),
                               "data": wire.dumps(ChatResult(text, "stop", Usage(0, 3), "fake-a"))})
        try:
            outcome = await asyncio.wait_for(handle.result(), 10)
        except BackendFailed as e:
            outcome = e
        return await asyncio.wait_for(watching, 10), outcome
    finally:
        await front.close()


async def test_a_second_attempt_that_says_the_same_continues_what_was_shown(tmp_path, redis_url):
    shown, result = await attempts(tmp_path, redis_url, [(1, "The keeper"), (1, " lit"), (2, "The keeper"),
                                                         (2, " lit"), (2, " the lamp")], (2, "The keeper lit the lamp"))
    assert shown == result.text == "The keeper lit the lamp"


async def test_a_second_attempt_that_says_something_else_fails_in_words_not_a_splice(tmp_path, redis_url):
    shown, outcome = await attempts(tmp_path, redis_url, [(1, "The keeper"), (1, " lit"), (2, "The keeper"),
                                                          (2, " slept"), (2, " all night")],
                                    (2, "The keeper slept all night"))
    assert shown == "The keeper lit"              # nothing of the other answer was added to it
    assert isinstance(outcome, BackendFailed)
    assert "stopped answering in the middle" in outcome.message and "ask again" in outcome.message


async def test_a_second_attempt_that_ends_before_what_was_shown_is_not_taken_as_the_answer(tmp_path, redis_url):
    shown, outcome = await attempts(tmp_path, redis_url, [(1, "The keeper"), (1, " lit"), (1, " the")],
                                    (2, "The keeper"))
    assert shown == "The keeper lit the" and isinstance(outcome, BackendFailed)


async def test_a_batch_sent_again_after_its_reply_was_lost_is_shown_once(tmp_path, redis_url):
    """Redis went away after it took a batch but before the worker heard so: the worker sends it
    again when Redis is back, with the same numbers."""
    shown, result = await attempts(tmp_path, redis_url, [(1, "The", 0), (1, " keeper", 1), (1, " keeper", 1),
                                                         (1, " lit", 2)], (1, "The keeper lit"))
    assert shown == result.text == "The keeper lit"
