"""The engine end to end with the real SmolLM2 model: submit, stream, cancel, limits, restart.

One engine serves the module. Its loader is the engine's own, behind a gate that tests close
when they need a job to wait in the queue deterministically (the model is unloaded, the gate
closed, and the next job then waits for its load while others queue behind it).
"""
from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest
import pytest_asyncio

from engine import (
    ChatJob,
    ChatMessage,
    ChatResult,
    EngineBusy,
    JobCancelled,
    JobTimeout,
    Origin,
    PromptTooLong,
    Queued,
    Started,
    Token,
)
from engine.runtime.engine import Engine
from tests.conftest import CHAT_MODEL, make_settings, requires_chat_model

pytestmark = [requires_chat_model, pytest.mark.asyncio(loop_scope="module")]

SYSTEM = ChatMessage("system", "You are a helpful assistant.")
STORY = [SYSTEM, ChatMessage("user", "Write a very long story about a dragon who learns to bake "
                                     "bread, with many chapters.")]


class Gated:
    def __init__(self):
        self.gate = threading.Event()
        self.gate.set()
        self.engine: Engine | None = None

    def load(self, name, device):
        assert self.gate.wait(30), "the test never opened the gate"
        return self.engine.dispatcher.load_model(name, device)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def rig(tmp_path_factory, shared_models_dir):
    gated = Gated()
    settings = make_settings(tmp_path_factory.mktemp("engine"), shared_models_dir,
                             context_tokens=2048, queue_max=3, user_queue_max=8, threads=2)
    engine = Engine(settings, load=gated.load, gpu_total=None)
    gated.engine = engine
    await engine.start()
    yield engine, gated
    gated.gate.set()
    await engine.close()


def chat(messages=None, **kw) -> ChatJob:
    kw.setdefault("temperature", 0.0)
    kw.setdefault("max_tokens", 24)
    kw.setdefault("origin", Origin(platform="test", user="alice"))
    return ChatJob(messages=list(messages or [SYSTEM, ChatMessage("user", "What is the capital of France?")]), **kw)


async def collect(handle, timeout=60):
    async def run():
        events = [e async for e in handle]
        return events
    return await asyncio.wait_for(run(), timeout)


async def until(predicate, timeout=30):
    async def poll():
        while not predicate():
            await asyncio.sleep(0.005)
    await asyncio.wait_for(poll(), timeout)


async def test_chat_job_streams_tokens_and_answers(rig):
    engine, _ = rig
    handle = await engine.submit(chat())
    events = await collect(handle)
    result = await handle.result()
    assert isinstance(result, ChatResult)
    assert isinstance(events[0], Queued)
    assert any(isinstance(e, Started) and e.model == CHAT_MODEL and e.device == "cpu" for e in events)
    tokens = [e.text for e in events if isinstance(e, Token)]
    assert len(tokens) > 1 and "".join(tokens) == result.text
    assert "Paris" in result.text
    # llama.cpp counts the end-of-turn token it generated, which streams no text
    assert result.usage.completion_tokens in (len(tokens), len(tokens) + 1) and result.usage.prompt_tokens > 0
    assert result.model == CHAT_MODEL
    stored = await engine.store.get_job(handle.id)
    assert stored["status"] == "done" and stored["result"]["text"] == result.text


async def test_the_job_is_in_the_store_before_submit_returns(rig):
    engine, _ = rig
    job = chat(max_tokens=4)
    handle = await engine.submit(job)
    stored = await engine.store.get_job(job.id)     # no other await ran the job in between
    assert stored is not None and stored["status"] in ("queued", "running")
    assert stored["payload"]["messages"][1]["content"] == "What is the capital of France?"
    assert stored["user"] == "test:alice" and stored["model"] == CHAT_MODEL
    await asyncio.wait_for(handle.result(), 60)


class CountingFlag(threading.Event):
    """A cancel flag that counts how often it is looked at after it is set (chat runs on the
    event loop, reading its runner's stream, and looks at it between tokens)."""

    def __init__(self):
        super().__init__()
        self.checks_after_set = 0

    def is_set(self) -> bool:
        value = super().is_set()
        if value:
            self.checks_after_set += 1
        return value


async def test_cancel_a_running_generation_stops_within_one_token(rig):
    engine, _ = rig
    handle = await engine.submit(chat(STORY, max_tokens=400))
    flag = handle.cancel_flag = CountingFlag()       # before the dispatch loop picks it up
    seen, after = 0, 0
    cancelled = False

    async def consume():
        nonlocal seen, after, cancelled
        async for event in handle:
            if isinstance(event, Token):
                if cancelled:
                    after += 1
                else:
                    seen += 1
                    if seen == 5:
                        assert await handle.cancel() is True
                        cancelled = True
    await asyncio.wait_for(consume(), 60)
    with pytest.raises(JobCancelled):
        await handle.result()
    # the generation looked after the flag was set, and stopped: at most one more token
    assert flag.checks_after_set >= 1
    assert after <= 1     # the one token already read from the runner's stream
    assert handle.status == "cancelled"
    assert (await engine.store.get_job(handle.id))["status"] == "cancelled"
    # the model is free again
    assert "Paris" in (await asyncio.wait_for((await engine.submit(chat())).result(), 60)).text


async def test_cancel_queued_and_engine_busy_on_a_full_queue(rig):
    engine, gated = rig
    # loaded and idle first, so that the unload is certain and the next job waits for a load
    await asyncio.wait_for((await engine.submit(chat(max_tokens=1))).result(), 60)
    assert await engine.models.unload(CHAT_MODEL) is True
    gated.gate.clear()
    try:
        first = await engine.submit(chat(max_tokens=4))
        await until(lambda: engine.scheduler.running)         # waiting for its load
        queued = [await engine.submit(chat(max_tokens=4, origin=Origin("test", f"u{k}")))
                  for k in range(3)]
        assert len(engine.scheduler.waiting) == 3
        with pytest.raises(EngineBusy) as busy:
            await engine.submit(chat(max_tokens=4, origin=Origin("test", "late")))
        assert busy.value.retry_after >= 1 and busy.value.status == 429
        # cancel one queued job: it never runs, its place is free again
        assert await queued[1].cancel() is True
        with pytest.raises(JobCancelled):
            await queued[1].result()
        assert (await engine.store.get_job(queued[1].id))["status"] == "cancelled"
        assert len(engine.scheduler.waiting) == 2
        again = await engine.submit(chat(max_tokens=4, origin=Origin("test", "late")))
    finally:
        gated.gate.set()
    for h in [first, queued[0], queued[2], again]:
        await asyncio.wait_for(h.result(), 60)
    assert not any(isinstance(e, Started) for e in await collect(queued[1]))


async def test_per_job_timeout(rig):
    engine, _ = rig
    await asyncio.wait_for((await engine.submit(chat(max_tokens=2))).result(), 60)  # loaded
    handle = await engine.submit(chat(STORY, max_tokens=400, timeout_s=0.05))
    with pytest.raises(JobTimeout) as e:
        await asyncio.wait_for(handle.result(), 60)
    assert e.value.seconds == 0.05 and "0.05 s" in e.value.message
    assert (await engine.store.get_job(handle.id))["status"] == "failed"
    assert "Paris" in (await asyncio.wait_for((await engine.submit(chat())).result(), 60)).text


def long_conversation(turns: int) -> list[ChatMessage]:
    filler = "Tell me about bread making in the old villages of the valley. "
    messages = [SYSTEM]
    for k in range(turns):
        messages.append(ChatMessage("user", f"Question {k}: {filler}"))
        messages.append(ChatMessage("assistant", f"Answer {k}: {filler}"))
    messages.append(ChatMessage("user", "What is the capital of France?"))
    return messages


async def test_a_long_conversation_is_trimmed_oldest_first_keeping_the_system_prompt(
        tmp_path, shared_models_dir):
    # A small context keeps the test fast: about 130 tokens of prompt are left for 40 turns
    # of history that need about 1,800.
    engine = Engine(make_settings(tmp_path, shared_models_dir, context_tokens=160, threads=2),
                    gpu_total=None)
    await engine.start()
    try:
        messages, max_tokens = long_conversation(40), 24
        handle = await engine.submit(chat(messages, max_tokens=max_tokens))
        result = await asyncio.wait_for(handle.result(), 240)
        assert result.trimmed_messages > 0 and result.text
        # which ones: ask the loaded model directly
        llm, _ = await engine.models.acquire(CHAT_MODEL)
        try:
            plain = [{"role": m.role, "content": m.content} for m in messages]
            kept, dropped, prompt_tokens, _ = await llm.fit(plain, max_tokens)
            assert (await llm.fit(plain[:1] + plain[-1:], max_tokens))[1] == 0
        finally:
            engine.models.release(CHAT_MODEL)
    finally:
        await engine.close()
    assert dropped == result.trimmed_messages
    assert kept[0] == plain[0] and kept[-1] == plain[-1]
    assert kept[1:] == plain[1 + dropped:]                  # the oldest went first
    assert prompt_tokens <= 160 - max_tokens


async def test_an_oversize_last_message_is_a_clear_error_not_a_crash(rig):
    engine, _ = rig
    huge = "bread " * 3000
    handle = await engine.submit(chat([SYSTEM, ChatMessage("user", huge)]))
    with pytest.raises(PromptTooLong) as e:
        await asyncio.wait_for(handle.result(), 60)
    assert "tokens" in e.value.message
    assert "Paris" in (await asyncio.wait_for((await engine.submit(chat())).result(), 60)).text


async def test_restart_runs_a_queued_job(tmp_path, shared_models_dir):
    settings = make_settings(tmp_path, shared_models_dir, threads=2)
    first = Engine(settings, gpu_total=None)       # accepts, but stops before running it
    job = chat(max_tokens=16)
    await first.submit(job)
    await first.close()

    second = Engine(settings, gpu_total=None)
    resumed = []

    async def listener(handle, ref):
        resumed.append(handle.id)
    second.on_resume("test", listener)
    try:
        await second.start()
        handle = second.handle(job.id)
        assert handle is not None
        result = await asyncio.wait_for(handle.result(), 60)
        assert "Paris" in result.text
        assert (await second.store.get_job(job.id))["status"] == "done"
        await until(lambda: resumed, 5)
        assert resumed == [job.id]
    finally:
        await second.close()


async def test_close_during_a_generation_is_clean_and_loses_nothing(tmp_path, shared_models_dir):
    settings = make_settings(tmp_path, shared_models_dir, threads=2)
    engine = Engine(settings, gpu_total=None)
    await engine.start()
    job = chat(STORY, max_tokens=60)
    handle = await engine.submit(job)
    async for event in handle:
        if isinstance(event, Token):
            break
    await asyncio.wait_for(engine.close(), 30)     # the worker stopped at its next token
    # cut off mid-answer: not finished, and left in the store as unfinished work
    assert handle.status != "done"
    db = sqlite3.connect(settings.data_path / "confab.db")
    try:
        (status,), = db.execute("SELECT status FROM jobs WHERE id = ?", (job.id,)).fetchall()
    finally:
        db.close()
    assert status in ("queued", "running"), status
    # so the next start answers it, whole
    again = Engine(settings, gpu_total=None)
    await again.start()
    try:
        resumed = again.handle(job.id)
        assert resumed is not None
        result = await asyncio.wait_for(resumed.result(), 120)
        assert result.text.strip()
        assert (await again.store.get_job(job.id))["status"] == "done"
    finally:
        await again.close()
