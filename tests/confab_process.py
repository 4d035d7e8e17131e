"""A real `confab run` process for the restart tests: started on a data folder, killed with real
signals, started again on the same folder; and what its store says between the two."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def clean_env(**settings: str) -> dict:
    """This process's environment without any Confab, Slack or Discord setting, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONFAB_", "SLACK_", "DISCORD_"))}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", **settings)
    return env


def start_confab(env: dict, cwd: Path, log: Path) -> subprocess.Popen:
    out = open(log, "ab")
    try:
        return subprocess.Popen([sys.executable, "-m", "bots.cli", "run", "--no-console"], env=env,
                                cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    finally:
        out.close()


def kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


def terminate(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it does not stop in time."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            pass
    kill(proc)


def _query(data_dir: Path, sql: str) -> list[tuple]:
    db = sqlite3.connect(data_dir / "confab.db")
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def statuses(data_dir: Path) -> dict[str, str]:
    return dict(_query(data_dir, "SELECT id, status FROM jobs"))


def reply_refs(data_dir: Path) -> list[str | None]:
    return [r for (r,) in _query(data_dir, "SELECT reply_ref FROM jobs")]


def results(data_dir: Path) -> dict[str, str | None]:
    return dict(_query(data_dir, "SELECT id, result FROM jobs"))


def open_events(data_dir: Path) -> list[str]:
    return [k for (k,) in _query(data_dir, "SELECT id FROM events WHERE status='open'")]
