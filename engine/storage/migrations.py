"""The store's schema, as numbered migrations for SQLite and PostgreSQL alike.

Each migration has its SQL for both databases (they differ in types and in how ids count);
`apply` runs the pending ones in order, each in its own transaction with its row in
`schema_version`, under a lock so that two processes starting together migrate once. A database
made before migrations existed (the first schema, created with IF NOT EXISTS) is adopted as it is.

`confab db status` and `confab db upgrade` use the same functions; the store applies them when it
opens.
"""
from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from engine.storage.postgres import PgConnection

LOCK_ID = 0x636F6E66   # "conf": PostgreSQL's advisory lock for migrating


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sqlite: str
    postgres: str


def _first(real: str, serial: str) -> str:
    return f"""
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    model TEXT NOT NULL,
    "user" TEXT NOT NULL,
    priority INTEGER NOT NULL,
    origin TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    created {real} NOT NULL,
    started {real},
    finished {real},
    result TEXT,
    error TEXT,
    reply_ref TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
CREATE TABLE IF NOT EXISTS messages (
    id {serial},
    conversation TEXT NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    created {real} NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_conversation ON messages(conversation, id);
CREATE TABLE IF NOT EXISTS audit (
    id {serial},
    at {real} NOT NULL,
    "user" TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
)
"""


def _events(real: str) -> str:
    return f"""
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    platform TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    created {real} NOT NULL,
    job_id TEXT
);
CREATE INDEX IF NOT EXISTS events_open ON events(platform, status, created)
"""


MIGRATIONS: list[Migration] = [
    Migration(1, "jobs, conversations and the audit log",
              _first("REAL", "INTEGER PRIMARY KEY AUTOINCREMENT"),
              _first("DOUBLE PRECISION", "BIGSERIAL PRIMARY KEY")),
    Migration(2, "unfinished jobs in the order they came, for resuming after a restart",
              "CREATE INDEX IF NOT EXISTS jobs_status_created ON jobs(status, created)",
              "CREATE INDEX IF NOT EXISTS jobs_status_created ON jobs(status, created)"),
    Migration(3, "platform events kept from before their acknowledgement until a job is stored",
              _events("REAL"), _events("DOUBLE PRECISION")),
]

LATEST = MIGRATIONS[-1].version

_VERSION_TABLE = {
    "sqlite": "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
              " applied REAL NOT NULL)",
    "postgres": "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                " applied DOUBLE PRECISION NOT NULL)",
}


def _statements(sql: str) -> list[str]:
    return [s.strip() for s in sql.split(";") if s.strip()]


def current_version(db) -> int:
    row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def apply(db, dialect: str) -> tuple[int, int]:
    """Bring the database to the latest schema; returns (version before, version after).
    `db` is a DB-API connection (sqlite3, or the store's PostgreSQL one) with `?` parameters."""
    if dialect not in _VERSION_TABLE:
        raise ValueError(f"unknown database dialect {dialect!r}")
    if dialect == "postgres":
        db.execute("SELECT pg_advisory_lock(?)", (LOCK_ID,))
    try:
        db.execute(_VERSION_TABLE[dialect])
        db.commit()
        before = current_version(db)
        for m in MIGRATIONS:
            if m.version <= before:
                continue
            if dialect == "sqlite":
                db.execute("BEGIN IMMEDIATE")
            if current_version(db) >= m.version:     # another process was first
                db.commit()
                continue
            for statement in _statements(m.sqlite if dialect == "sqlite" else m.postgres):
                db.execute(statement)
            db.execute("INSERT INTO schema_version (version, name, applied) VALUES (?, ?, ?)",
                       (m.version, m.name, time.time()))
            db.commit()
        return before, current_version(db)
    except BaseException:
        db.rollback()
        raise
    finally:
        if dialect == "postgres":
            db.execute("SELECT pg_advisory_unlock(?)", (LOCK_ID,))
            db.commit()


def pending(db) -> list[int]:
    return [m.version for m in MIGRATIONS if m.version > current_version(db)]


# -- for `confab db` -------------------------------------------------------------------------

def store_target(where: str | Path) -> str | Path:
    """A PostgreSQL URL as it is; a SQLite file (a path, or sqlite:PATH) as a Path."""
    text = str(where)
    if text.startswith(("postgresql://", "postgres://")):
        return text
    return Path(text[len("sqlite:"):] if text.startswith("sqlite:") else text).expanduser()


def connect(settings):
    """(connection, dialect) for the configured store, without migrating."""
    target = store_target(settings.database_url or settings.data_path / "confab.db")
    if isinstance(target, str):
        return PgConnection(target), "postgres"
    target.parent.mkdir(parents=True, exist_ok=True)
    return sqlite3.connect(target), "sqlite"


def status(settings) -> tuple[int, list[int]]:
    db, dialect = connect(settings)
    try:
        db.execute(_VERSION_TABLE[dialect])
        db.commit()
        return current_version(db), pending(db)
    finally:
        db.close()


def upgrade(settings) -> tuple[int, int]:
    db, dialect = connect(settings)
    try:
        return apply(db, dialect)
    finally:
        db.close()
