"""Jobs, conversations and the audit log, in SQLite (WAL) in the data folder.

All database work runs on one dedicated thread, so the event loop never waits on the disk and
SQLite sees one writer.
"""
from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    model TEXT NOT NULL,
    user TEXT NOT NULL,
    priority INTEGER NOT NULL,
    origin TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    result TEXT,
    error TEXT,
    reply_ref TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation TEXT NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_conversation ON messages(conversation, id);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    user TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
);
"""


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="confab-store")
        self._db: sqlite3.Connection | None = None
        self._pool.submit(self._open).result()

    def _open(self) -> None:
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._db.commit()

    async def _run(self, fn, *args) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        def _close():
            if self._db:
                self._db.close()
                self._db = None
        self._pool.submit(_close).result()
        self._pool.shutdown(wait=True)

    # -- jobs --------------------------------------------------------------------------------

    async def add_job(self, record: dict, priority: int) -> None:
        def _add():
            origin = record["origin"]
            self._db.execute(
                "INSERT INTO jobs (id, kind, model, user, priority, origin, payload, status, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?)",
                (record["id"], record["kind"], record["model"],
                 f"{origin['platform']}:{origin['user']}", priority, json.dumps(origin),
                 json.dumps(record), record["created_at"]))
            self._db.commit()
        await self._run(_add)

    async def set_status(self, job_id: str, status: str, result: dict | None = None,
                         error: str | None = None) -> None:
        def _set():
            now = time.time()
            if status == "running":
                self._db.execute("UPDATE jobs SET status=?, started=? WHERE id=?", (status, now, job_id))
            else:
                self._db.execute(
                    "UPDATE jobs SET status=?, finished=?, result=?, error=? WHERE id=?",
                    (status, now, json.dumps(result) if result is not None else None, error, job_id))
            self._db.commit()
        await self._run(_set)

    async def set_reply_ref(self, job_id: str, ref: str) -> None:
        def _set():
            self._db.execute("UPDATE jobs SET reply_ref=? WHERE id=?", (ref, job_id))
            self._db.commit()
        await self._run(_set)

    async def get_job(self, job_id: str) -> dict | None:
        def _get():
            cur = self._db.execute(
                "SELECT id, kind, model, user, priority, origin, payload, status, created, started,"
                " finished, result, error, reply_ref FROM jobs WHERE id=?", (job_id,))
            row = cur.fetchone()
            if row is None:
                return None
            keys = [d[0] for d in cur.description]
            out = dict(zip(keys, row))
            for k in ("origin", "payload", "result"):
                if out[k] is not None:
                    out[k] = json.loads(out[k])
            return out
        return await self._run(_get)

    async def unfinished_jobs(self) -> list[dict]:
        def _list():
            rows = self._db.execute(
                "SELECT payload, priority, reply_ref FROM jobs WHERE status IN ('queued', 'running')"
                " ORDER BY created").fetchall()
            return [(json.loads(p), prio, ref) for p, prio, ref in rows]
        return await self._run(_list)

    async def run_seconds_since(self, since: float) -> dict[str, float]:
        """Seconds each user's jobs spent running, for jobs started at `since` or later."""
        def _sum():
            rows = self._db.execute(
                "SELECT user, SUM(finished - started) FROM jobs WHERE started >= ? AND finished"
                " IS NOT NULL GROUP BY user", (since,)).fetchall()
            return {user: float(total or 0.0) for user, total in rows}
        return await self._run(_sum)

    async def recent_failures(self, limit: int = 20) -> list[dict]:
        """The last failed jobs, newest first: id, kind, model, user, error, finished."""
        def _list():
            cur = self._db.execute(
                "SELECT id, kind, model, user, error, finished FROM jobs WHERE status='failed'"
                " ORDER BY finished DESC LIMIT ?", (limit,))
            keys = [d[0] for d in cur.description]
            return [dict(zip(keys, row)) for row in cur.fetchall()]
        return await self._run(_list)

    # -- conversations -------------------------------------------------------------------------

    async def append_message(self, conversation: str, role: str, content: str) -> None:
        def _add():
            self._db.execute("INSERT INTO messages (conversation, role, content, created) VALUES (?, ?, ?, ?)",
                             (conversation, role, content, time.time()))
            self._db.commit()
        await self._run(_add)

    async def history(self, conversation: str, limit: int) -> list[tuple[str, str]]:
        def _hist():
            rows = self._db.execute(
                "SELECT role, content FROM messages WHERE conversation=? ORDER BY id DESC LIMIT ?",
                (conversation, limit)).fetchall()
            return list(reversed(rows))
        return await self._run(_hist)

    async def clear_conversation(self, conversation: str) -> None:
        def _clear():
            self._db.execute("DELETE FROM messages WHERE conversation=?", (conversation,))
            self._db.commit()
        await self._run(_clear)

    # -- audit -----------------------------------------------------------------------------------

    async def audit(self, user: str, action: str, detail: dict) -> None:
        def _add():
            self._db.execute("INSERT INTO audit (at, user, action, detail) VALUES (?, ?, ?, ?)",
                             (time.time(), user, action, json.dumps(detail)))
            self._db.commit()
        await self._run(_add)
