"""The terminal console on the shared commands, with the real SmolLM2 model, driven through
in-memory stdin and stdout."""
from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sqlite3

import pytest
import pytest_asyncio

from bots.common.commands import Commands
from bots.console.console import Console
from engine import ChatJob, ChatMessage, JobCancelled, Origin
from engine.runtime.engine import Engine
from tests.conftest import CHAT_MODEL, make_settings, requires_chat_model

pytestmark = [requires_chat_model, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine(tmp_path_factory, shared_models_dir):
    e = Engine(make_settings(tmp_path_factory.mktemp("console"), shared_models_dir, threads=2),
               gpu_total=None)
    await e.start()
    yield e
    await e.close()


async def run_console(engine: Engine, text: str, user: str = "alice") -> tuple[Console, str]:
    out = io.StringIO()
    console = Console(engine, Commands(engine), stdin=io.StringIO(text), stdout=out, user=user)
    await asyncio.wait_for(console.run(), 180)
    return console, out.getvalue()


def jobs_of(engine: Engine, user_key: str) -> list[dict]:
    with sqlite3.connect(engine.store.path) as db:
        rows = db.execute("SELECT payload, status FROM jobs WHERE user=? ORDER BY created",
                          (user_key,)).fetchall()
    return [dict(json.loads(p), status=s) for p, s in rows]


async def test_a_plain_question_streams_an_answer(engine):
    _, out = await run_console(engine, "What is the capital of France?\n")
    assert out.startswith("Confab console.")
    answer = out.split("you> ", 2)[1].strip()
    assert answer                       # the model's own sampling: the words vary, not the shape
    job = jobs_of(engine, "console:alice")[-1]
    assert job["status"] == "done" and job["origin"]["is_dm"] is True
    assert job["messages"][0] == {"role": "system", "content": "You are a helpful assistant."}
    with sqlite3.connect(engine.store.path) as db:
        (stored,) = db.execute("SELECT result FROM jobs WHERE id=?", (job["id"],)).fetchone()
    assert json.loads(stored)["text"].strip() == answer      # streamed whole, as generated


async def test_help_models_and_unknown_commands(engine):
    _, out = await run_console(engine, "/help\n/models\n/nonsense\n/quit\nnever read\n", user="bob")
    assert "/ask QUESTION" in out and "/cancel" in out and "/queue" in out
    assert "Installed models:" in out and CHAT_MODEL in out
    assert "I don't know the command /nonsense" in out
    assert jobs_of(engine, "console:bob") == []          # /quit stopped before the last line


async def test_queue_and_cancel(engine):
    # a long answer for carol, running (as from a second terminal of hers)
    origin = Origin(platform="console", user="carol", is_dm=True)
    handle = await engine.submit(ChatJob(origin=origin, max_tokens=400, temperature=0, messages=[
        ChatMessage("user", "Write a very long story about a dragon, with many chapters.")]))

    async def running():
        while handle.status != "running":
            await asyncio.sleep(0.01)
    await asyncio.wait_for(running(), 60)
    _, out = await run_console(engine, "/queue\n/cancel\n", user="carol")
    assert f"{handle.id}  chat on {CHAT_MODEL}: running" in out
    assert f"Cancelled {handle.id}." in out
    with pytest.raises(JobCancelled):
        await asyncio.wait_for(handle.result(), 60)
    _, out = await run_console(engine, "/queue\n/cancel\n", user="carol")
    assert "You have no jobs waiting or running." in out
    assert "You have nothing to cancel." in out


async def test_history_is_kept_across_turns(engine):
    console, out = await run_console(engine, "My name is Dora and I like apples.\n"
                                             "What is my name?\n", user="dora")
    first, second = jobs_of(engine, "console:dora")
    assert [m["content"] for m in first["messages"]][-1] == "My name is Dora and I like apples."
    contents = [m["content"] for m in second["messages"]]
    assert contents[1] == "My name is Dora and I like apples."       # the earlier turn, then
    assert second["messages"][2]["role"] == "assistant" and contents[2]   # its answer
    assert contents[-1] == "What is my name?"
    history = await engine.history(f"console:dora:{console.session}")
    assert [role for role, _ in history] == ["user", "assistant", "user", "assistant"]
    # a new session starts afresh
    await run_console(engine, "Hello\n", user="dora")
    assert len(jobs_of(engine, "console:dora")[-1]["messages"]) == 2


async def test_cancel_typed_while_an_answer_streams_stops_it(engine):
    # a pipe, as a terminal: /cancel is typed once the answer has started to stream
    read_fd, write_fd = os.pipe()
    out = io.StringIO()
    console = Console(engine, Commands(engine), stdin=os.fdopen(read_fd, "r"), stdout=out, user="erin")
    task = asyncio.create_task(console.run())

    async def streaming():
        while not (console.reply.cancellable.is_set() and len(out.getvalue().partition("you> ")[2]) > 20):
            await asyncio.sleep(0.01)
    os.write(write_fd, b"Count from 1 to 1000, one number per line.\n")
    await asyncio.wait_for(streaming(), 120)
    os.write(write_fd, b"/cancel\n")

    async def cancelled():
        while "🛑 Cancelled." not in out.getvalue():
            await asyncio.sleep(0.01)
    await asyncio.wait_for(cancelled(), 60)
    os.write(write_fd, b"/queue\n")
    os.close(write_fd)
    await asyncio.wait_for(task, 60)
    console.stdin.close()
    text = out.getvalue()
    assert "Cancelled " in text and "You have no jobs waiting or running." in text
    (job,) = jobs_of(engine, "console:erin")
    assert job["status"] == "cancelled"
    assert await engine.history(f"console:erin:{console.session}") == []   # nothing remembered


async def test_ctrl_c_while_an_answer_streams_cancels_the_answer_not_the_console(engine):
    read_fd, write_fd = os.pipe()
    out = io.StringIO()
    console = Console(engine, Commands(engine), stdin=os.fdopen(read_fd, "r"), stdout=out, user="finn")
    task = asyncio.create_task(console.run())

    async def streaming():
        while not (console.reply.cancellable.is_set() and len(out.getvalue().partition("you> ")[2]) > 20):
            await asyncio.sleep(0.01)
    os.write(write_fd, b"Count from 1 to 1000, one number per line.\n")
    await asyncio.wait_for(streaming(), 120)
    os.kill(os.getpid(), signal.SIGINT)

    async def cancelled():
        while "🛑 Cancelled." not in out.getvalue():
            await asyncio.sleep(0.01)
    await asyncio.wait_for(cancelled(), 60)
    os.write(write_fd, b"/help\n")          # the console is still there
    os.close(write_fd)
    await asyncio.wait_for(task, 60)
    console.stdin.close()
    assert "/ask QUESTION" in out.getvalue().split("🛑 Cancelled.")[1]
    (job,) = jobs_of(engine, "console:finn")
    assert job["status"] == "cancelled"


async def test_the_console_answers_as_the_api_does_for_the_same_conversation_and_seed(tmp_path, shared_models_dir):
    """No door sets its own sampling: with the operator's seed for the model (and the model's
    default temperature otherwise), the console and the API give the same answer."""
    from aiohttp import web
    from openai import AsyncOpenAI

    from bots.api.app import create_app
    sampling = tmp_path / "sampling.json"
    sampling.write_text(json.dumps({CHAT_MODEL: {"seed": 1234, "temperature": 0.9}}))
    engine = Engine(make_settings(tmp_path, shared_models_dir, threads=2, sampling_file=str(sampling)),
                    gpu_total=None)
    await engine.start()
    runner = web.AppRunner(create_app(engine), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = site._server.sockets[0].getsockname()[1]
        client = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        question = "Write one sentence about a lighthouse."
        r = await client.chat.completions.create(model=CHAT_MODEL, max_tokens=engine.settings.max_tokens,
                                                 messages=[{"role": "system", "content": engine.settings.system_prompt},
                                                           {"role": "user", "content": question}])
        api_answer = r.choices[0].message.content.strip()
        _, out = await run_console(engine, question + "\n", user="gwen")
        console_answer = out.split("you> ", 2)[1].strip()
        assert console_answer == api_answer and api_answer
    finally:
        await runner.cleanup()
        await engine.close()
