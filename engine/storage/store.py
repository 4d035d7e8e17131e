"""Jobs, conversations and the audit log, in SQLite (WAL) in the data folder, or in PostgreSQL
when CONFAB_DATABASE_URL says so (engine/storage/postgres.py); the schema comes from
engine/storage/migrations.py.

All database work runs on one dedicated thread, so the event loop never waits on the disk and
SQLite sees one writer.
"""
from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from engine.safety import safe_json
from engine.storage import migrations
from engine.storage.migrations import store_target
from engine.storage.postgres import PgConnection

log = logging.getLogger(__name__)

# The schema: engine/storage/migrations.py (add a numbered migration there, for SQLite and PostgreSQL).


class Store:
    def __init__(self, path: str | Path):
        """`path`: the SQLite file, or a postgresql:// URL."""
        target = store_target(path)
        self.url = target if isinstance(target, str) else None
        self.path = Path("postgresql") if self.url else target
        if not self.url:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="confab-store")
        self._db: sqlite3.Connection | None = None
        self._pool.submit(self._open).result()

    def _open(self) -> None:
        if self.url:
            self._db = PgConnection(self.url)
            migrations.apply(self._db, "postgres")
            return
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        migrations.apply(self._db, "sqlite")

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

    async def add_job(self, record: dict, priority: int, audit: tuple[str, str, dict] | None = None,
                      reply_ref: str | None = None, event: str | None = None) -> None:
        """Write a job, and with it its audit line (user, action, detail), where its answer goes
        (`reply_ref`) and the closing of the platform event it answers: one transaction."""
        def _add():
            origin = record["origin"]
            self._db.execute(
                "INSERT INTO jobs (id, kind, model, user, priority, origin, payload, status, created,"
                " reply_ref) VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?)",
                (record["id"], record["kind"], record["model"],
                 f"{origin['platform']}:{origin['user']}", priority, json.dumps(origin),
                 json.dumps(record), record["created_at"], reply_ref))
            if audit is not None:
                self._insert_audit(*audit)
            if event is not None:
                self._db.execute("UPDATE events SET status='closed', job_id=? WHERE id=? AND status='open'",
                                 (record["id"], event))
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

    async def undelivered_jobs(self, since: float) -> list[tuple[dict, int, str, dict | None]]:
        """Jobs done since `since` whose answer was posted but whose reply record (see
        bots/common/delivery.py) does not say its final text went out: a kill landed between."""
        def _list():
            rows = self._db.execute(
                "SELECT payload, priority, reply_ref, result FROM jobs WHERE status='done'"
                " AND reply_ref IS NOT NULL AND finished >= ? ORDER BY created", (since,)).fetchall()
            out = []
            for payload, prio, ref, result in rows:
                try:
                    where = json.loads(ref)
                except ValueError:
                    continue
                if isinstance(where, dict) and where.get("messages") and not where.get("delivered"):
                    out.append((json.loads(payload), prio, ref, json.loads(result) if result else None))
            return out
        return await self._run(_list)

    # -- platform events, kept from before their acknowledgement until answered -----------------

    async def add_event(self, event_id: str, platform: str, payload: dict) -> bool:
        """Keep an event; False when one with this id was kept before (a redelivery, or a
        mention's twin message event). A payload nested too deeply to read back raises
        safe_json.TooDeep."""
        text = safe_json.dumps(payload)

        def _add():
            cur = self._db.execute(
                "INSERT INTO events (id, platform, payload, status, created) VALUES (?, ?, ?, 'open', ?)"
                " ON CONFLICT (id) DO NOTHING", (event_id, platform, text, time.time()))
            self._db.commit()
            return cur.rowcount == 1
        return await self._run(_add)

    async def update_event(self, event_id: str, payload: dict) -> None:
        """What is known of an open event so far (a voice turn's answer, once it is complete)."""
        text = safe_json.dumps(payload)

        def _update():
            self._db.execute("UPDATE events SET payload=? WHERE id=? AND status='open'",
                             (text, event_id))
            self._db.commit()
        await self._run(_update)

    async def close_event(self, event_id: str) -> None:
        def _close():
            self._db.execute("UPDATE events SET status='closed' WHERE id=? AND status='open'", (event_id,))
            self._db.commit()
        await self._run(_close)

    async def open_events(self, platform: str, before: float) -> list[tuple[str, dict]]:
        """(id, payload) of the platform's events kept before `before` and not yet answered,
        oldest first. One that cannot be read (kept by an older Confab with no depth bound, or
        damaged) is closed with a warning, so that it stops no replay."""
        def _list():
            rows = self._db.execute(
                "SELECT id, payload FROM events WHERE platform=? AND status='open' AND created < ?"
                " ORDER BY created", (platform, before)).fetchall()
            out, unreadable = [], []
            for event_id, payload in rows:
                try:
                    out.append((event_id, safe_json.loads(payload)))
                except ValueError as e:
                    log.warning("closing the kept event %s: its payload cannot be read (%s)", event_id, e)
                    unreadable.append(event_id)
            for event_id in unreadable:
                self._db.execute("UPDATE events SET status='closed' WHERE id=?", (event_id,))
            if unreadable:
                self._db.commit()
            return out
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
        await self.append_messages(conversation, [(role, content)])

    async def append_messages(self, conversation: str, turns: list[tuple[str, str]]) -> None:
        """(role, content) pairs, in order, in one transaction."""
        def _add():
            now = time.time()
            for role, content in turns:   # (the PostgreSQL connection has no executemany)
                self._db.execute("INSERT INTO messages (conversation, role, content, created) VALUES (?, ?, ?, ?)",
                                 (conversation, role, content, now))
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
            self._insert_audit(user, action, detail)
            self._db.commit()
        await self._run(_add)

    def _insert_audit(self, user: str, action: str, detail: dict) -> None:
        self._db.execute("INSERT INTO audit (at, user, action, detail) VALUES (?, ?, ?, ?)",
                         (time.time(), user, action, json.dumps(detail)))
