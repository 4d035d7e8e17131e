"""An HTTP server open to the network with no API key is said out loud where an operator looks:
the start-up log of a real `confab serve`, and `confab doctor` (the dashboard's banner is in
tests/api/test_dashboard.py). A warning, never a refusal: containers listen on all addresses."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from engine.safety.exposure import is_loopback, open_to_network
from tests.conftest import free_port, make_settings

CONFAB = Path(sys.executable).parent / "confab"
needs_script = pytest.mark.skipif(not CONFAB.exists(), reason="the confab script is not installed")


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.0.1.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("", False), ("192.168.1.20", False), ("10.0.0.1", False),
    ("name-that-does-not-resolve.invalid", False)])
def test_which_hosts_are_this_machine_only(host, loopback):
    assert is_loopback(host) is loopback


def test_the_warning_names_the_address_and_what_to_set(tmp_path):
    warning = open_to_network(make_settings(tmp_path, host="0.0.0.0", port=8123))
    assert "0.0.0.0:8123" in warning and "CONFAB_API_KEYS" in warning and "CONFAB_HOST=127.0.0.1" in warning
    assert open_to_network(make_settings(tmp_path, host="0.0.0.0", api_keys=("sk-1",))) is None
    assert open_to_network(make_settings(tmp_path)) is None          # the default: 127.0.0.1


def env_for(tmp_path, **settings) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONFAB_", "SLACK_", "DISCORD_"))}
    env.update(CONFAB_DATA_DIR=str(tmp_path / "data"), CONFAB_MODELS_DIR=str(tmp_path / "models"),
               CONFAB_PORT=str(free_port()), **settings)
    return env


@needs_script
@pytest.mark.parametrize("host, keys, warned", [("0.0.0.0", "", True), ("0.0.0.0", "sk-confab-1", False),
                                                ("127.0.0.1", "", False)])
def test_doctor_warns_without_failing(tmp_path, host, keys, warned):
    r = subprocess.run([str(CONFAB), "doctor"], env=env_for(tmp_path, CONFAB_HOST=host, CONFAB_API_KEYS=keys),
                       capture_output=True, text=True, timeout=120)
    assert "Traceback" not in r.stderr
    (line,) = [l for l in r.stdout.splitlines() if l[5:].startswith("network")]
    if warned:
        assert line.startswith("WARN") and "0.0.0.0" in line and "CONFAB_API_KEYS" in line, r.stdout
    else:
        assert line.startswith("ok "), r.stdout
    assert not any(l.startswith("BAD") and "network" in l for l in r.stdout.splitlines())


@needs_script
@pytest.mark.parametrize("host, warned", [("0.0.0.0", True), ("127.0.0.1", False)])
async def test_serve_logs_the_warning_at_start_up(tmp_path, host, warned):
    env = env_for(tmp_path, CONFAB_HOST=host, CONFAB_LOG_LEVEL="INFO")
    log = tmp_path / "confab.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(CONFAB), "serve"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        async def up():
            while "Confab API on" not in log.read_text():
                assert proc.poll() is None, log.read_text()
                await asyncio.sleep(0.1)
        await asyncio.wait_for(up(), 60)
        with urllib.request.urlopen(f"http://127.0.0.1:{env['CONFAB_PORT']}/healthz", timeout=10) as r:
            assert r.status == 200          # a warning, not a refusal: it serves
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(asyncio.to_thread(proc.wait), 30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    warnings = [l for l in log.read_text().splitlines() if "OPEN TO THE NETWORK" in l]
    if warned:
        (line,) = warnings
        assert " WARNING " in line and f"0.0.0.0:{env['CONFAB_PORT']}" in line and "CONFAB_API_KEYS" in line
    else:
        assert warnings == []
