"""The llama-server runner as a process: built from the pinned llama-cpp-python source, and never
outliving Confab (synchronous tests, apart from test_runner.py's module event loop)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from models import llama_runner
from tests.conftest import CHAT_MODEL, requires_chat_model

pytestmark = [requires_chat_model, pytest.mark.timeout(300)]


def test_the_runner_is_built_from_the_pinned_llama_cpp_python_source():
    binary = llama_runner.find_binary()
    built = json.loads((binary.parent / "build.json").read_text())
    import importlib.metadata
    assert built["llama_cpp_python"] == importlib.metadata.version("llama-cpp-python")
    assert "-DLLAMA_CURL=OFF" in built["flags"] and "-DLLAMA_USE_PREBUILT_UI=OFF" in built["flags"]
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30)
    assert "version" in (out.stdout + out.stderr).lower()


def test_runners_never_outlive_confab(tmp_path, shared_models_dir):
    """`confab serve` killed with SIGKILL takes its runner with it (parent-death signal)."""
    from tests.conftest import free_port
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONFAB_")}
    env.update(CONFAB_PORT=str(port), CONFAB_DATA_DIR=str(tmp_path), CONFAB_MODELS_DIR=str(shared_models_dir),
               CONFAB_THREADS="2")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "confab"), "serve"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        from openai import OpenAI
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=120)
        deadline = time.monotonic() + 60
        while True:
            try:
                client.chat.completions.create(model=CHAT_MODEL, max_tokens=4,
                                               messages=[{"role": "user", "content": "Hi"}])
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        children = subprocess.run(["pgrep", "-P", str(proc.pid), "-f", "llama-server"],
                                  capture_output=True, text=True).stdout.split()
        assert children, "the runner is a child of confab serve"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{pid}") and
                                              "llama-server" in open(f"/proc/{pid}/cmdline").read()
                                              for pid in children if os.path.exists(f"/proc/{pid}/cmdline")):
        time.sleep(0.1)
    assert not [pid for pid in children if os.path.exists(f"/proc/{pid}/cmdline")
                and "llama-server" in open(f"/proc/{pid}/cmdline").read()]


def test_socket_folders_of_dead_runners_are_removed_and_live_ones_kept(tmp_path, monkeypatch):
    import socket
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    old = time.time() - llama_runner.STALE_RUNNER_DIR_S - 60

    def runner_folder(name: str, listen: bool, age: float | None = old) -> tuple[Path, socket.socket]:
        folder = tmp_path / f"{llama_runner.RUNNER_DIR_PREFIX}{name}"
        folder.mkdir()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(folder / "runner.sock"))
        if listen:
            sock.listen()
        else:
            sock.close()        # what a SIGKILLed runner leaves: the socket file, nobody behind it
        if age is not None:
            os.utime(folder, (age, age))
        return folder, sock

    dead, _ = runner_folder("dead", listen=False)
    live, live_sock = runner_folder("live", listen=True)
    starting, _ = runner_folder("starting", listen=False, age=None)
    empty = tmp_path / f"{llama_runner.RUNNER_DIR_PREFIX}empty"
    empty.mkdir()
    os.utime(empty, (old, old))
    unrelated = tmp_path / "someone-elses"
    unrelated.mkdir()
    os.utime(unrelated, (old, old))
    try:
        assert llama_runner.sweep_dead_runner_folders() == 2
        assert not dead.exists() and not empty.exists()
        assert live.exists() and starting.exists() and unrelated.exists()
    finally:
        live_sock.close()
