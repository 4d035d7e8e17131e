"""The store on SQLite and on a real PostgreSQL (started by the tests): the same contract, one
migration tool for both, and an engine that resumes a job from PostgreSQL after a restart."""
from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import Origin
from engine.runtime.engine import Engine
from engine.storage import migrations
from engine.storage.store import Store
from tests.conftest import make_settings
from tests.scaleout.fakes import SleepJob, fake_load, install_fake_models

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "confab.db")
    return request.getfixturevalue("database_url")


def record(job_id: str, user: str = "alice", created: float | None = None) -> dict:
    return {"id": job_id, "kind": "chat", "model": "m", "created_at": created or time.time(),
            "origin": {"platform": "slack", "user": user}, "messages": [{"role": "user", "content": "hi"}]}


async def test_the_store_contract(store_url):
    store = Store(store_url)
    try:
        await store.add_job(record("j1", created=1.0), 1)
        await store.add_job(record("j2", user="bob", created=2.0), 0)
        await store.add_job(record("j3", created=3.0), 2)
        await store.set_status("j1", "running")
        await store.set_status("j3", "done", result={"text": "ok 50%"})
        await store.set_reply_ref("j2", '{"channel": "C1", "messages": ["1.2"]}')
        got = await store.get_job("j3")
        assert got["status"] == "done" and got["result"] == {"text": "ok 50%"}
        assert got["user"] == "slack:alice" and got["origin"]["platform"] == "slack"
        unfinished = await store.unfinished_jobs()
        assert [(r["id"], prio, ref) for r, prio, ref in unfinished] == [
            ("j1", 1, None), ("j2", 0, '{"channel": "C1", "messages": ["1.2"]}')]
        await store.set_status("j2", "done", result={"text": "answer"})
        assert [(r["id"], res) for r, _, _, res in await store.undelivered_jobs(0)] == [("j2", {"text": "answer"})]
        await store.set_reply_ref("j2", '{"channel": "C1", "messages": ["1.2"], "delivered": true}')
        assert await store.undelivered_jobs(0) == []
        await store.set_status("j1", "failed", error="boom")
        assert [f["id"] for f in await store.recent_failures()] == ["j1"]
        assert set(await store.run_seconds_since(0)) == {"slack:alice"}
        assert await store.get_job("nope") is None

        await store.append_message("conv", "user", "hello")
        await store.append_message("conv", "assistant", "hi there")
        await store.append_message("other", "user", "elsewhere")
        assert await store.history("conv", 10) == [("user", "hello"), ("assistant", "hi there")]
        assert await store.history("conv", 1) == [("assistant", "hi there")]
        await store.clear_conversation("conv")
        assert await store.history("conv", 10) == []
        await store.audit("slack:alice", "submit:chat", {"job": "j1"})
        # events kept before their ack: once each; the job made for one closes it, with the
        # job's reply record, in the same write
        assert await store.add_event("slack:C1:1.1", "slack", {"kind": "message", "text": "hé 50%"})
        assert not await store.add_event("slack:C1:1.1", "slack", {"kind": "message"})
        assert await store.add_event("slack:C1:1.2", "slack", {"kind": "message"})
        assert await store.add_event("discord:m:9", "discord", {"kind": "message"})
        assert await store.open_events("slack", time.time() + 1) == [
            ("slack:C1:1.1", {"kind": "message", "text": "hé 50%"}), ("slack:C1:1.2", {"kind": "message"})]
        assert await store.open_events("slack", 0) == []        # none kept before then
        await store.add_job(record("j4"), 1, reply_ref='{"channel": "C1"}', event="slack:C1:1.1")
        await store.close_event("slack:C1:1.2")
        assert await store.open_events("slack", time.time() + 1) == []
        assert [k for k, _ in await store.open_events("discord", time.time() + 1)] == ["discord:m:9"]
        assert (await store.get_job("j4"))["reply_ref"] == '{"channel": "C1"}'
    finally:
        store.close()


def test_migrations_bring_a_fresh_database_to_the_latest_and_run_once(store_url):
    Store(store_url).close()
    Store(store_url).close()          # a second open changes nothing
    db, dialect = migrations.connect(make_settings("/nonexistent", database_url=store_url)
                                     if store_url.startswith("postgres") else
                                     make_settings(Path(store_url).parent))
    try:
        assert migrations.current_version(db) == migrations.LATEST
        rows = db.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
        assert [r[0] for r in rows] == [m.version for m in migrations.MIGRATIONS]
    finally:
        db.close()


def test_a_database_from_before_migrations_is_adopted_with_its_data(tmp_path):
    path = tmp_path / "confab.db"
    db = sqlite3.connect(path)     # the first schema, as Confab created it before migrations
    db.executescript("""
        CREATE TABLE jobs (id TEXT PRIMARY KEY, kind TEXT NOT NULL, model TEXT NOT NULL,
            user TEXT NOT NULL, priority INTEGER NOT NULL, origin TEXT NOT NULL, payload TEXT NOT NULL,
            status TEXT NOT NULL, created REAL NOT NULL, started REAL, finished REAL, result TEXT,
            error TEXT, reply_ref TEXT);
        CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, conversation TEXT NOT NULL,
            role TEXT NOT NULL, content TEXT NOT NULL, created REAL NOT NULL);
        CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, user TEXT NOT NULL,
            action TEXT NOT NULL, detail TEXT NOT NULL);
        INSERT INTO messages (conversation, role, content, created) VALUES ('c', 'user', 'kept', 1);
    """)
    db.commit()
    db.close()
    env = {"CONFAB_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "bots.cli", "db", "status"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert "schema version 0" in out.stdout and "pending: 1, 2, 3" in out.stdout, out.stderr
    out = subprocess.run([sys.executable, "-m", "bots.cli", "db", "upgrade"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert f"0 -> {migrations.LATEST}" in out.stdout, out.stderr
    db = sqlite3.connect(path)
    try:
        assert db.execute("SELECT content FROM messages").fetchall() == [("kept",)]
        assert db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == migrations.LATEST
    finally:
        db.close()


async def test_the_engine_on_postgres_resumes_an_accepted_job_after_a_restart(tmp_path, database_url):
    settings = make_settings(tmp_path, database_url=database_url)
    first = Engine(settings, load=fake_load, gpu_total=None)     # never started: the job waits
    install_fake_models(first)
    job = SleepJob(model="fake-a", seconds=0.05, text="resumed from postgres",
                   origin=Origin(platform="api", user="alice"))
    await first.submit(job)
    await first.close()
    assert not (tmp_path / "confab.db").exists()      # nothing went to SQLite

    second = Engine(settings, load=fake_load, gpu_total=None)
    install_fake_models(second)
    try:
        await second.start()
        handle = second.handle(job.id)
        assert handle is not None
        result = await asyncio.wait_for(handle.result(), 20)
        assert result.text == "resumed from postgres"
        assert (await second.store.get_job(job.id))["status"] == "done"
    finally:
        await second.close()
