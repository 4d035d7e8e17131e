"""Chat LoRA adapters on the real llama.cpp runner with the offline SmolLM2 and adapters made
here (random low-rank matrices for four layers, written as GGUF adapters): the base's runner
serves them per request, side by side with the base, and the base's answers stay its own."""
from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio
from aiohttp import web
from openai import AsyncOpenAI

from bots.api.app import create_app
from engine.jobs import ChatJob, ChatMessage, Origin
from engine.runtime.engine import Engine
from tests.conftest import CHAT_MODEL, make_settings, requires_chat_model
from tests.models.tiny_lora import make_chat_lora

pytestmark = [requires_chat_model, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]

SYSTEM = ChatMessage("system", "You are a helpful assistant.")
QUESTIONS = ["What is the capital of France?", "Name three colours of the rainbow.",
             "What do bees make?"]


def job(model: str, question: str = QUESTIONS[0], **kw) -> ChatJob:
    return ChatJob(model=model, messages=[SYSTEM, ChatMessage("user", question)], temperature=0.0,
                   max_tokens=16, origin=Origin(platform="test", user="ana"), **kw)


async def answer(engine: Engine, j: ChatJob) -> str:
    handle = await engine.submit(j)
    return (await asyncio.wait_for(handle.result(), 120)).text


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine(tmp_path_factory, shared_models_dir):
    folder = tmp_path_factory.mktemp("lora-chat")
    e = Engine(make_settings(folder, shared_models_dir, threads=2, chat_slots=3,
                             context_tokens=1024), gpu_total=None)
    base = e.registry.get(CHAT_MODEL)
    e.registry.add(make_chat_lora(folder / "brand.gguf", base.path, strength=0.2, seed=1),
                   kind="lora", base=CHAT_MODEL, name="brand-voice")
    e.registry.add(folder / "brand.gguf", kind="lora", base=CHAT_MODEL, name="brand-off", scale=0.0)
    e.refresh_models()
    await e.start(resume=False)
    yield e
    await e.close()


async def test_an_adapter_answers_differently_from_its_base_at_temperature_0(engine):
    base = await answer(engine, job(CHAT_MODEL))
    tuned = await answer(engine, job("brand-voice"))
    assert "Paris" in base
    assert tuned != base
    # one runner, the base's, with the adapter loaded in it: no second copy of the model
    assert engine.models.resident_names() == [CHAT_MODEL]
    assert engine.models.instance_of(CHAT_MODEL).adapters == [str(engine.registry.get("brand-voice").path)]


async def test_scale_0_gives_the_bases_answer(engine):
    for question in QUESTIONS[:2]:
        assert await answer(engine, job("brand-off", question)) == await answer(engine, job(CHAT_MODEL, question))


async def test_the_bases_answers_do_not_change_while_adapter_requests_run_beside_it(engine):
    alone = {q: await answer(engine, job(CHAT_MODEL, q)) for q in QUESTIONS}
    tuned = {q: await answer(engine, job("brand-voice", q)) for q in QUESTIONS}
    # interleaved in the runner's slots: base, adapter, base, adapter... at once
    jobs = [job(CHAT_MODEL if i % 2 == 0 else "brand-voice", QUESTIONS[i // 2 % 3]) for i in range(6)]
    together = await asyncio.gather(*(answer(engine, j) for j in jobs))
    for j, text in zip(jobs, together):
        question = j.messages[-1].content
        if j.model == CHAT_MODEL:
            assert text == alone[question], question
        else:   # a random adapter's greedy text is fragile (batch sizes): it is not the base's
            assert text != alone[question] and tuned[question] != alone[question], question


async def test_a_conversation_moving_from_adapter_to_base_does_not_reuse_the_adapters_prefix(engine):
    """The same thread asked through the adapter, then through the base: the slot's cached
    prefix (computed with the adapter) must not leak into the base's answer."""
    base = await answer(engine, job(CHAT_MODEL, QUESTIONS[2], conversation="thread-1"))
    await answer(engine, job("brand-voice", QUESTIONS[2], conversation="thread-2"))
    assert await answer(engine, job(CHAT_MODEL, QUESTIONS[2], conversation="thread-2")) == base


async def test_an_adapters_job_is_scheduled_as_its_bases_and_counted_in_its_size(engine):
    handle = await engine.submit(job("brand-voice"))
    assert engine.base_of("brand-voice") == CHAT_MODEL
    await asyncio.wait_for(handle.result(), 120)
    resident = {r.name: r for r in engine.models.snapshot()}
    assert list(resident) == [CHAT_MODEL]
    adapter = engine.registry.get("brand-voice")
    runner = engine.models.instance_of(CHAT_MODEL)
    assert runner.size_bytes >= adapter.size and resident[CHAT_MODEL].size == runner.size_bytes


async def test_an_adapter_added_while_its_base_is_loaded_restarts_the_base_with_it(engine, tmp_path):
    before = engine.models.instance_of(CHAT_MODEL)
    assert before is not None
    engine.registry.add(make_chat_lora(tmp_path / "late.gguf", engine.registry.get(CHAT_MODEL).path,
                                       strength=0.2, seed=7), kind="lora", base=CHAT_MODEL, name="late")
    text = await answer(engine, job("late"))   # resolving the new name refreshes the registry
    after = engine.models.instance_of(CHAT_MODEL)
    assert after is not before and not before.alive()
    assert len(after.adapters) == 2 and text != await answer(engine, job(CHAT_MODEL))
    # the earlier adapter still answers as before the restart
    assert await answer(engine, job("brand-off")) == await answer(engine, job(CHAT_MODEL))


async def test_the_api_lists_adapters_with_their_parent_and_answers_by_their_name(engine):
    runner = web.AppRunner(create_app(engine), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        async with AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-test",
                               max_retries=0, timeout=120) as client:
            listed = {m.id: m.model_dump() for m in (await client.models.list()).data}
            assert listed["brand-voice"]["parent"] == CHAT_MODEL and listed["brand-voice"]["kind"] == "chat"
            assert "parent" not in listed[CHAT_MODEL]
            messages = [{"role": "system", "content": SYSTEM.content},
                        {"role": "user", "content": QUESTIONS[0]}]
            answers = {}
            for model in (CHAT_MODEL, "brand-voice"):
                out = await client.chat.completions.create(model=model, messages=messages,
                                                           temperature=0, max_tokens=16)
                assert out.model == model
                answers[model] = out.choices[0].message.content
            assert "Paris" in answers[CHAT_MODEL] and answers["brand-voice"] != answers[CHAT_MODEL]
    finally:
        await runner.cleanup()
