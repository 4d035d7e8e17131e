"""Chat on llama.cpp's server, the real one built from the pinned source, with the offline
SmolLM2 (and Gemma 3 270M where two models are needed): slots, the prompt cache, cancel, the
runner's life, and answers that a cut-short answer does not spoil."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time

import pytest
import pytest_asyncio

from engine.errors import JobCancelled, PromptTooLong
from engine.jobs import ChatJob, ChatMessage, Origin, Token
from engine.runtime.engine import Engine
from engine.work.chat_runner import conversation_file
from models import llama_runner
from tests.conftest import CHAT_MODEL, make_settings, requires_chat_model

pytestmark = [requires_chat_model, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]

SYSTEM = ChatMessage("system", "You are a helpful assistant.")
FRANCE = [SYSTEM, ChatMessage("user", "What is the capital of France?")]
STORY = [SYSTEM, ChatMessage("user", "Write a long story about a dragon who learns to sail.")]


def chat(messages=FRANCE, **kw) -> ChatJob:
    kw.setdefault("temperature", 0.0)
    kw.setdefault("model", CHAT_MODEL)
    return ChatJob(messages=list(messages), **kw)


async def answer(engine: Engine, job: ChatJob) -> str:
    handle = await engine.submit(job)
    return (await asyncio.wait_for(handle.result(), 120)).text


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine(tmp_path_factory, shared_models_dir):
    e = Engine(make_settings(tmp_path_factory.mktemp("runner"), shared_models_dir, threads=2,
                             chat_slots=3), gpu_total=None)
    await e.start(resume=False)
    yield e
    await e.close()



async def test_a_loaded_model_is_a_runner_on_a_private_socket_with_its_slots(engine):
    assert "Paris" in await answer(engine, chat())
    runner = engine.models.instance_of(CHAT_MODEL)
    assert runner.process.alive() and len(runner.slots) == 3
    assert runner.socket_path.endswith(".sock") and os.path.exists(runner.socket_path)
    # it listens on nothing but its socket (no TCP port in its own view of the network)
    tcp = subprocess.run(["sh", "-c", f"ls -l /proc/{runner.process.pid}/fd"], capture_output=True, text=True)
    assert "socket:" in tcp.stdout
    assert os.getpgid(runner.process.pid) == runner.process.pid   # its own process group


async def run_sequence(engine: Engine, cut) -> tuple[str, str]:
    """Request 1, then a story cut short by `cut` (or run to its end when None), then request 1
    again: (first answer, last answer)."""
    first = await answer(engine, chat(max_tokens=64))
    if cut == "disconnect":   # a client of the API that goes away mid-stream
        await disconnect_mid_stream(engine)
        return first, await answer(engine, chat(max_tokens=64))
    story = chat(STORY, max_tokens=5 if cut == "length" else 160,
                 stop=["sail"] if cut == "stop" else [])
    handle = await engine.submit(story)
    if cut in ("cancel",):
        async for event in handle:
            if isinstance(event, Token):
                await handle.cancel()
                break
        with pytest.raises(JobCancelled):
            await asyncio.wait_for(handle.result(), 60)
    else:
        await asyncio.wait_for(handle.result(), 120)
    return first, await answer(engine, chat(max_tokens=64))


async def disconnect_mid_stream(engine: Engine) -> None:
    from aiohttp import web
    from openai import AsyncOpenAI

    from bots.api.app import create_app
    runner = web.AppRunner(create_app(engine), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = site._server.sockets[0].getsockname()[1]
        client = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        stream = await client.chat.completions.create(
            model=CHAT_MODEL, stream=True, temperature=0, max_tokens=160,
            messages=[{"role": m.role, "content": m.content} for m in STORY])
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                break
        await stream.close()
        while any(not h.done for h in engine.active_jobs()):   # its job is cancelled, not left running
            await asyncio.sleep(0.05)
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("cut", ["length", "stop", "cancel", "disconnect"])
async def test_an_answer_cut_short_does_not_spoil_the_next_one(tmp_path, shared_models_dir, cut):
    """Issue: after an answer stopped by max_tokens, the cached state spoiled the next request
    sharing its prefix. Request 3 must be what it is when request 2 ran to its natural end."""
    results = {}
    for mode in (None, cut):
        e = Engine(make_settings(tmp_path / str(mode), shared_models_dir, threads=2), gpu_total=None)
        await e.start(resume=False)
        try:
            results[mode] = await run_sequence(e, mode)
        finally:
            await e.close()
    natural_first, natural_third = results[None]
    cut_first, cut_third = results[cut]
    assert cut_third == natural_third
    assert cut_first == natural_first == natural_third


async def test_two_jobs_overlap_on_one_model_and_either_cancels_at_once(engine):
    long_a = await engine.submit(chat(STORY, max_tokens=300))
    long_b = await engine.submit(chat(STORY, max_tokens=300, origin=Origin(user="b")))

    async def first_token(handle):
        async for event in handle:
            if isinstance(event, Token):
                return
    await asyncio.wait_for(asyncio.gather(first_token(long_a), first_token(long_b)), 60)
    assert long_a.status == long_b.status == "running"       # both generating, side by side
    await long_b.cancel()
    with pytest.raises(JobCancelled):
        await asyncio.wait_for(long_b.result(), 30)
    # B stopped while A was still generating: its cancel did not wait for A's answer
    assert not long_a.done and long_a.status == "running"
    result = await asyncio.wait_for(long_a.result(), 120)    # the other one goes on to its end
    assert result.finish_reason in ("length", "stop") and len(result.text) > 100
    assert (await engine.store.get_job(long_b.id))["status"] == "cancelled"


async def test_overlapping_jobs_are_each_charged_their_own_run_and_a_waiting_one_not_its_wait(engine):
    """The daily GPU-seconds budget counts the time a job runs, not the time it waits for a slot:
    two class-1 jobs side by side are both charged in full, the third waits (two slots for class
    1 here) and is charged only from when it got one."""
    await answer(engine, chat(max_tokens=4))       # the model loaded: what follows is run time
    before = {u.who: u.gpu_s_today for u in engine.limits.usage()}
    users = ("charge-a", "charge-b", "charge-c")
    began = time.monotonic()
    handles = [await engine.submit(chat(STORY, max_tokens=200, origin=Origin(user=u))) for u in users]
    ended = {}

    async def finish(handle):
        await asyncio.wait_for(handle.result(), 240)
        ended[handle.id] = time.monotonic()
    await asyncio.gather(*(finish(h) for h in handles))
    a, b, c = handles
    charged = {u.who: u.gpu_s_today - before.get(u.who, 0.0) for u in engine.limits.usage()}
    run_a, run_b, run_c = (charged[Origin(user=u).user_key] for u in users)
    assert run_a > 0 and run_b > 0 and run_c > 0
    # A and B ran together: their charges overlap, so they add up to more than the time both took
    assert run_a + run_b > max(ended[a.id], ended[b.id]) - began
    # C started only once A or B had finished, and its wait was not charged
    assert run_c <= ended[c.id] - min(ended[a.id], ended[b.id]) + 1.0


async def test_a_long_prompt_without_a_system_message_gets_confabs_own_words(tmp_path, shared_models_dir):
    """SmolLM2's template adds its own system prompt when there is none: counted, not guessed."""
    e = Engine(make_settings(tmp_path, shared_models_dir, threads=2, context_tokens=256), gpu_total=None)
    await e.start(resume=False)
    try:
        words = " ".join(["bread"] * 226)
        handle = await e.submit(chat([ChatMessage("user", words)]))
        with pytest.raises(PromptTooLong) as err:
            await asyncio.wait_for(handle.result(), 60)
        assert "the limit is 240 tokens" in err.value.message
        assert "exceed context window" not in err.value.message
        # a prompt that fits, with the template's own system prompt counted, is answered
        short = await e.submit(chat([ChatMessage("user", "What is the capital of France?")], max_tokens=16))
        assert (await asyncio.wait_for(short.result(), 60)).text
    finally:
        await e.close()


async def test_a_conversation_keeps_its_slot_and_comes_back_after_an_unload(engine):
    thread = "slack:C1:1700000000.000100"
    turn1 = chat([SYSTEM, ChatMessage("user", "Name three colours.")], conversation=thread, max_tokens=16)
    await answer(engine, turn1)
    runner = engine.models.instance_of(CHAT_MODEL)
    held = [s for s in runner.slots if s.conversation == thread]
    assert len(held) == 1
    # unloading saves the slot to disk; the next load restores it when the thread comes back
    assert await engine.models.unload(CHAT_MODEL)
    saved = engine.settings.data_path / "slots" / CHAT_MODEL / conversation_file(thread)
    assert saved.is_file() and saved.stat().st_size > 0
    turn2 = chat([SYSTEM, ChatMessage("user", "Name three colours."), ChatMessage("assistant", "Red."),
                  ChatMessage("user", "And three more?")], conversation=thread, max_tokens=16)
    assert await answer(engine, turn2)
    again = engine.models.instance_of(CHAT_MODEL)
    assert again is not runner and again.restores == 1


async def test_a_runner_that_dies_is_restarted_and_the_job_tried_again(engine):
    assert "Paris" in await answer(engine, chat())
    runner = engine.models.instance_of(CHAT_MODEL)
    os.killpg(runner.process.pid, signal.SIGKILL)
    runner.process.proc.wait(10)
    assert "Paris" in await answer(engine, chat())       # nothing was shown yet: tried once more
    assert engine.models.instance_of(CHAT_MODEL) is not runner



async def test_a_chat_model_served_by_another_engine_goes_through_confabs_queue(tmp_path, shared_models_dir):
    """CONFAB_REMOTE_CHAT: a separately started llama-server (an engine elsewhere), with
    Confab's scheduler, store and API in front."""
    from models.registry import Registry
    from tests.conftest import free_port
    port = free_port()
    path = Registry(tmp_path, shared_models_dir).installed()[CHAT_MODEL].path
    server = subprocess.Popen([str(llama_runner.find_binary()), "-m", path, "--host", "127.0.0.1",
                               "--port", str(port), "-np", "2", "-c", "4096", "-t", "2", "--no-ui",
                               "--api-key", "s3cret"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    e = Engine(make_settings(tmp_path, shared_models_dir, remote_chat=(f"far-smol=http://127.0.0.1:{port}/v1",),
                             remote_chat_key="s3cret"), gpu_total=None)
    await e.start(resume=False)
    try:
        assert e.resolve_model("far-smol", "chat").fmt == "remote-openai"
        deadline = time.monotonic() + 60
        while True:
            handle = await e.submit(chat(model="far-smol", max_tokens=16))
            try:
                result = await asyncio.wait_for(handle.result(), 60)
                break
            except Exception:       # the far engine is still loading
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
        assert "Paris" in result.text and result.usage.completion_tokens > 0
        record = await e.store.get_job(handle.id)
        assert record["status"] == "done" and record["payload"]["model"] == "far-smol"
        assert not os.path.exists(str(e.settings.data_path / "slots" / "far-smol"))   # no runner of ours
    finally:
        await e.close()
        server.terminate()
        server.wait(10)


async def test_a_runner_that_dies_mid_answer_fails_the_job_with_words(engine):
    """Part of the answer was shown: a second answer would not match it, so the job fails and
    says why, and the next job gets a new runner."""
    handle = await engine.submit(chat(STORY, max_tokens=300, temperature=0.8))
    shown = []
    async for event in handle:
        if isinstance(event, Token) and event.text:
            shown.append(event.text)
            if len(shown) == 3:
                runner = engine.models.instance_of(CHAT_MODEL)
                os.killpg(runner.process.pid, signal.SIGKILL)
    from engine.errors import BackendFailed
    with pytest.raises(BackendFailed) as err:
        await asyncio.wait_for(handle.result(), 60)
    assert "stopped answering" in err.value.message
    assert len(shown) >= 3
    assert (await engine.store.get_job(handle.id))["status"] == "failed"
    assert "Paris" in await answer(engine, chat())
