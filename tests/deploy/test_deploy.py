"""deploy/: what can be checked without a Docker engine. The compose file is valid by the
Compose Specification and has the expected services, volumes and health check; the systemd units
parse and run the right commands; the entrypoint starts `confab serve` on this host and answers
/healthz."""
from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import free_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
VENV_BIN = Path(sys.executable).parent


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_compose_has_confab_and_optional_redis_and_postgres():
    doc = compose()
    services = doc["services"]
    assert {"confab", "confab-cpu", "worker", "redis", "postgres"} <= set(services)
    confab = services["confab"]
    assert "profiles" not in confab                       # the default service
    assert confab["build"]["dockerfile"] == "deploy/Dockerfile"
    assert services["confab-cpu"]["build"]["dockerfile"] == "deploy/Dockerfile.cpu"
    for optional in ("redis", "postgres", "worker", "confab-cpu"):
        assert services[optional]["profiles"], optional
    assert "models:/models" in confab["volumes"] and "data:/data" in confab["volumes"]
    assert {"models", "data"} <= set(doc["volumes"])
    assert confab["healthcheck"]["test"] == ["CMD", "confab-entrypoint", "healthcheck"]
    gpu = confab["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    assert services["worker"]["command"] == ["worker"]
    for name in ("redis", "postgres"):
        assert services[name]["healthcheck"]["test"]


def interpolated(text: str) -> str:
    """${VAR:-default} -> default, as `docker compose` does with VAR unset."""
    return re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: m.group(2) or "", text)


def test_compose_sets_only_settings_confab_reads():
    import dataclasses

    from bots.adapters import settings_classes
    from engine.config import Settings
    known = {f.metadata["env"] for cls in (Settings, *settings_classes()) for f in dataclasses.fields(cls)
             if "env" in f.metadata}
    for name, service in compose()["services"].items():
        env = service.get("environment") or {}
        for var in env:
            if var.startswith("CONFAB_"):
                assert var in known, f"{name} sets {var}, which Confab does not read"
    worker = compose()["services"]["worker"]["environment"]
    assert "redis://" in worker["CONFAB_QUEUE_URL"] and "postgresql://" in worker["CONFAB_DATABASE_URL"]


def test_every_named_volume_a_service_mounts_is_declared():
    doc = compose()
    for name, service in doc["services"].items():
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0]
            if not source.startswith((".", "/", "$")):
                assert source in doc["volumes"], f"{name} mounts undeclared volume {source}"


def docker_compose() -> list[str] | None:
    """`docker compose`, where Docker and its compose plugin are installed."""
    if shutil.which("docker") is None:
        return None
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    return ["docker", "compose"] if probe.returncode == 0 else None


def test_compose_file_is_valid_with_or_without_docker():
    """compose_spec (the test extra: the compose_spec crate, a strict parser of the Compose
    Specification: unknown keys, bad durations, port, volume and device syntax are errors, and
    `validate` checks what services refer to) always; `docker compose config` as well where the
    plugin is installed. Without Docker the file is still checked, never skipped."""
    import compose_spec
    parsed = compose_spec.PyCompose.from_yaml(interpolated((DEPLOY / "compose.yaml").read_text()))
    parsed.validate()
    assert set(parsed.service_names()) == set(compose()["services"])
    data = parsed.to_dict()
    assert data["services"]["confab"]["healthcheck"]["test"] == ["CMD", "confab-entrypoint", "healthcheck"]
    for name, service in data["services"].items():
        for needed in service.get("depends_on") or ():
            assert needed in data["services"], f"{name} depends on {needed}, which is not a service"
    # the parser refuses what Docker refuses, rather than ignoring it
    with pytest.raises(ValueError, match="restart_policy"):
        compose_spec.PyCompose.from_yaml("services:\n  a:\n    image: x\n    restart_policy: 1\n")
    with pytest.raises(ValueError, match="duration"):
        compose_spec.PyCompose.from_yaml("services:\n  a:\n    image: x\n    healthcheck:\n"
                                         "      interval: 5 parsecs\n")
    command = docker_compose()
    if command is not None:
        # `config` only reads and resolves the file: no Docker engine is needed.
        out = subprocess.run([*command, "-f", str(DEPLOY / "compose.yaml"), "--profile", "scale",
                              "--profile", "cpu", "config", "--quiet"], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.cpu"])
def test_dockerfiles_run_as_a_user_with_volumes_and_a_healthcheck(dockerfile):
    text = (DEPLOY / dockerfile).read_text()
    assert "USER confab" in text
    assert 'VOLUME ["/models", "/data"]' in text
    assert "HEALTHCHECK" in text and "healthcheck" in text
    assert "COPY deploy/entrypoint.sh" in text
    if dockerfile == "Dockerfile":
        assert "FROM nvidia/cuda:" in text and "-runtime-" in text
        assert "-DGGML_CUDA=on" in text
    # the USER line comes after every RUN that needs root
    last_run = max(i for i, l in enumerate(text.splitlines()) if l.startswith("RUN"))
    user = next(i for i, l in enumerate(text.splitlines()) if l.startswith("USER"))
    assert user > last_run


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.cpu"])
def test_everything_the_dockerfiles_copy_exists(dockerfile):
    root = DEPLOY.parent
    for line in (DEPLOY / dockerfile).read_text().splitlines():
        parts = line.split()
        if parts[:1] == ["COPY"] and not parts[1].startswith("--from"):
            for source in parts[1:-1]:
                assert (root / source).exists(), f"{dockerfile} copies {source}, which is not in the repo"


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string((DEPLOY / name).read_text())
    return parser


@pytest.mark.parametrize("name, command", [("confab-serve.service", ["run", "--no-console"]),
                                           ("confab-worker.service", ["worker"])])
def test_systemd_units_parse_and_run_the_right_command(name, command):
    u = unit(name)
    assert {"Unit", "Service", "Install"} <= set(u.sections())
    argv = shlex.split(u["Service"]["ExecStart"])
    assert Path(argv[0]).name == "confab" and argv[1:] == command
    assert u["Service"]["User"] == "confab"
    assert u["Service"]["Restart"] == "on-failure"
    assert u["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("name", ["confab-serve.service", "confab-worker.service"])
def test_systemd_analyze_finds_nothing_but_the_missing_binary(name):
    out = subprocess.run(["systemd-analyze", "verify", str(DEPLOY / name)], capture_output=True, text=True)
    problems = [l for l in (out.stdout + out.stderr).splitlines()
                if l.strip() and "is not executable" not in l and "No such file" not in l]
    assert not problems, problems


def test_entrypoint_starts_confab_serve_and_answers_healthz(tmp_path):
    port = free_port()
    env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "HOME": str(tmp_path),
           "CONFAB_DATA_DIR": str(tmp_path / "data"), "CONFAB_MODELS_DIR": str(tmp_path / "models"),
           "CONFAB_HOST": "127.0.0.1", "CONFAB_PORT": str(port), "CONFAB_LOG_LEVEL": "INFO"}
    proc = subprocess.Popen(["sh", str(DEPLOY / "entrypoint.sh"), "serve"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, body = time.monotonic() + 60, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    body = r.read()
                    break
            except OSError:
                time.sleep(0.2)
        assert body is not None, proc.stdout.read().decode() if proc.poll() is not None else "no answer"
        assert b'"status": "ok"' in body
        assert (tmp_path / "data" / "confab.db").exists() and (tmp_path / "models").is_dir()
        check = subprocess.run(["sh", str(DEPLOY / "entrypoint.sh"), "healthcheck"], env=env,
                               capture_output=True, timeout=30)
        assert check.returncode == 0, check.stderr
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0


def test_entrypoint_healthcheck_fails_when_nothing_listens(tmp_path):
    env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "HOME": str(tmp_path), "CONFAB_PORT": str(free_port())}
    check = subprocess.run(["sh", str(DEPLOY / "entrypoint.sh"), "healthcheck"], env=env,
                           capture_output=True, timeout=30)
    assert check.returncode == 1 and b"unhealthy" in check.stderr


def test_entrypoint_refuses_an_unwritable_data_folder(tmp_path):
    blocker = tmp_path / "a-file"          # a folder cannot be made under a file, even by root
    blocker.write_text("")
    env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "HOME": str(tmp_path), "CONFAB_DATA_DIR": str(blocker / "d")}
    out = subprocess.run(["sh", str(DEPLOY / "entrypoint.sh"), "serve"], env=env, capture_output=True, timeout=30)
    assert out.returncode == 1 and b"not a writable folder" in out.stderr
