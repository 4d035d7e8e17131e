"""The knowledge base's storage: documents, chunks and their vectors in `DATA_DIR/kb.db`.

Its own SQLite file beside the store's `confab.db`, for three reasons: vector search needs the
sqlite-vec extension loaded into the connection, and Python builds without extension loading
(pyenv's default) need another SQLite library for that (pysqlite3), which should not own the
job queue; `confab kb add` runs as a separate process while Confab serves, and a bulk import
then never holds the lock that job writes wait on; and a team can copy, back up or rebuild its
knowledge base without touching jobs and conversations. All work runs on one dedicated thread,
as in the store.

Vectors live in a `vec0` virtual table with cosine distance; a chunk's rowid is its id there.
A document is re-embedded only when its content hash (bytes, chunk size and embedding model)
changes.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

from ..errors import BackendMissing, UserError
from .parse import SUFFIXES, Chunk, ParseError, chunk, parse_file

log = logging.getLogger(__name__)

Embed = Callable[[list[str]], Awaitable[Any]]   # texts -> (n, dim) float32 array

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL UNIQUE,      -- absolute path at ingestion
    name TEXT NOT NULL,               -- file name, as cited
    title TEXT NOT NULL,
    fmt TEXT NOT NULL,
    link TEXT NOT NULL,
    hash TEXT NOT NULL,
    chunks INTEGER NOT NULL,
    added REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    ord INTEGER NOT NULL,
    section TEXT NOT NULL,
    text TEXT NOT NULL,
    link TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
CREATE TABLE IF NOT EXISTS outcomes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    platform TEXT NOT NULL,
    channel TEXT NOT NULL,
    thread TEXT NOT NULL,
    question TEXT NOT NULL,
    decision TEXT NOT NULL,           -- answer | silent | handover
    score REAL NOT NULL,
    sources TEXT NOT NULL,            -- JSON list of file names
    feedback INTEGER                  -- 1 helpful, 0 not helpful, NULL none
);
"""


def connect(path: Path):
    """A connection with sqlite-vec loaded: the stdlib's sqlite3 when it may load extensions,
    else pysqlite3 (the `kb` extra installs it where the stdlib cannot)."""
    try:
        import sqlite_vec
    except ImportError:
        raise BackendMissing("sqlite-vec", "kb") from None
    import sqlite3
    modules = [sqlite3]
    try:
        from pysqlite3 import dbapi2
        modules.append(dbapi2)
    except ImportError:
        pass
    for module in modules:
        db = module.connect(path, check_same_thread=False)
        if hasattr(db, "enable_load_extension"):
            db.enable_load_extension(True)
            sqlite_vec.load(db)
            db.enable_load_extension(False)
            return db
        db.close()
    raise BackendMissing("an SQLite that can load extensions (pysqlite3-binary)", "kb")


@dataclass
class Hit:
    chunk_id: int
    score: float        # cosine similarity, 1 - cosine distance
    text: str
    section: str
    link: str
    title: str
    name: str           # file name of the document


@dataclass
class IngestReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    chunks_embedded: int = 0


def find_files(paths: list[str | Path]) -> list[Path]:
    out = []
    for p in map(lambda x: Path(x).expanduser().resolve(), paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUFFIXES
                          and not any(part.startswith(".") for part in f.relative_to(p).parts))
        elif p.is_file():
            out.append(p)
        else:
            raise UserError(f"{p} does not exist.")
    return out


def embed_text(title: str, section: str, text: str) -> str:
    """What is embedded for a chunk: its text under its titles, so they count in retrieval."""
    head = " — ".join(x for x in (title, section) if x)
    return f"{head}\n{text}" if head else text


class KnowledgeBase:
    def __init__(self, path: str | Path, embed: Embed, model: str = "", chunk_chars: int = 900,
                 max_file_bytes: int = 20 * 2**20):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.embed, self.model = embed, model
        self.chunk_chars, self.max_file_bytes = chunk_chars, max_file_bytes
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="confab-kb")
        self._closed = False
        self._db = None
        self._pool.submit(self._open).result()

    def _open(self) -> None:
        self._db = connect(self.path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        self._db.commit()

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True

        def _close():
            if self._db:
                self._db.close()
                self._db = None
        self._pool.submit(_close).result()
        self._pool.shutdown(wait=True)

    # -- vectors -----------------------------------------------------------------------------

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def _ensure_vectors(self, dim: int) -> None:
        have = self._meta("dim")
        if have is not None and int(have) != dim:
            raise UserError(f"The knowledge base holds {have}-dimensional vectors, but the embedding "
                            f"model makes {dim}. Re-ingest everything: `confab kb add PATH --force`.")
        if have is None:
            self._db.execute(f"CREATE VIRTUAL TABLE IF NOT EXISTS chunk_vec USING "
                             f"vec0(embedding float[{dim}] distance_metric=cosine)")
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('dim', ?)", (str(dim),))
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('model', ?)", (self.model,))

    def _delete_doc(self, doc_id: int) -> None:
        if self._meta("dim") is not None:
            self._db.execute("DELETE FROM chunk_vec WHERE rowid IN (SELECT id FROM chunks WHERE doc_id=?)",
                             (doc_id,))
        self._db.execute("DELETE FROM chunks WHERE doc_id=?", (doc_id,))
        self._db.execute("DELETE FROM documents WHERE id=?", (doc_id,))

    # -- ingestion ---------------------------------------------------------------------------

    def content_hash(self, data: bytes) -> str:
        h = hashlib.sha256(data)
        h.update(f"|chunk={self.chunk_chars}|model={self.model}".encode())
        return h.hexdigest()

    async def add(self, paths: list[str | Path], force: bool = False, prune: bool = False,
                  progress: Callable[[str], None] | None = None) -> IngestReport:
        """Ingest files and folders; with `prune`, documents once ingested from these folders
        whose files are gone are removed."""
        report = IngestReport()
        files = find_files(paths)
        if prune:
            present = {str(f) for f in files}
            for folder in (Path(p).expanduser().resolve() for p in paths):
                if folder.is_dir():
                    for doc in await self.documents():
                        if doc["source"].startswith(str(folder) + "/") and doc["source"] not in present:
                            report.removed += await self.remove(doc["source"])
        for path in files:
            name = path.name
            try:
                size = path.stat().st_size
                if size > self.max_file_bytes:
                    raise ParseError(f"{name} is {size} bytes; the limit is {self.max_file_bytes} "
                                     "(CONFAB_KB_MAX_FILE_BYTES).")
                data = await asyncio.to_thread(path.read_bytes)
                digest = self.content_hash(data)
                known = await self._run(self._doc_hash, str(path))
                if known == digest and not force:
                    report.unchanged.append(name)
                    continue
                doc = parse_file(path, data)
                chunks = chunk(doc, self.chunk_chars)
                if not chunks:
                    raise ParseError(f"{name} has no text.")
                vectors = await self.embed([embed_text(doc.title, c.section, c.text) for c in chunks])
                await self._run(self._store_doc, path, doc, chunks, vectors, digest)
                report.chunks_embedded += len(chunks)
                (report.updated if known else report.added).append(name)
                if progress:
                    progress(f"{'updated' if known else 'added'} {name}: {len(chunks)} chunks")
            except (ParseError, UnicodeError, OSError) as e:
                report.failed.append((name, str(e)))
                if progress:
                    progress(f"skipped {name}: {e}")
        return report

    def _doc_hash(self, source: str) -> str | None:
        row = self._db.execute("SELECT hash FROM documents WHERE source=?", (source,)).fetchone()
        return row[0] if row else None

    def _store_doc(self, path: Path, doc, chunks: list[Chunk], vectors, digest: str) -> None:
        import sqlite_vec
        now = time.time()
        db = self._db
        try:
            self._ensure_vectors(int(vectors.shape[1]))
            row = db.execute("SELECT id, added FROM documents WHERE source=?", (str(path),)).fetchone()
            added = row[1] if row else now
            if row:
                self._delete_doc(row[0])
            cur = db.execute("INSERT INTO documents (source, name, title, fmt, link, hash, chunks, added,"
                             " updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             (str(path), path.name, doc.title, doc.fmt, doc.link, digest, len(chunks),
                              added, now))
            doc_id = cur.lastrowid
            for i, (c, v) in enumerate(zip(chunks, vectors)):
                cid = db.execute("INSERT INTO chunks (doc_id, ord, section, text, link) VALUES (?, ?, ?, ?, ?)",
                                 (doc_id, i, c.section, c.text, c.link)).lastrowid
                db.execute("INSERT INTO chunk_vec (rowid, embedding) VALUES (?, ?)",
                           (cid, sqlite_vec.serialize_float32([float(x) for x in v])))
            db.commit()
        except Exception:
            db.rollback()
            raise

    # -- reading -----------------------------------------------------------------------------

    async def search(self, vector, k: int = 4) -> list[Hit]:
        def _search():
            import sqlite_vec
            if self._meta("dim") is None:
                return []
            rows = self._db.execute(
                "SELECT v.rowid, v.distance, c.text, c.section, c.link, d.title, d.name, d.link"
                " FROM (SELECT rowid, distance FROM chunk_vec WHERE embedding MATCH ? AND k = ?) v"
                " JOIN chunks c ON c.id = v.rowid JOIN documents d ON d.id = c.doc_id"
                " ORDER BY v.distance",
                (sqlite_vec.serialize_float32([float(x) for x in vector]), int(k))).fetchall()
            return [Hit(r[0], 1.0 - float(r[1]), r[2], r[3], r[4] or r[7], r[5], r[6]) for r in rows]
        return await self._run(_search)

    async def documents(self) -> list[dict]:
        def _list():
            cur = self._db.execute("SELECT id, name, title, fmt, link, chunks, updated, source"
                                   " FROM documents ORDER BY name")
            keys = [d[0] for d in cur.description]
            return [dict(zip(keys, r)) for r in cur.fetchall()]
        return await self._run(_list)

    async def remove(self, what: str) -> list[str]:
        """Remove documents by id, file name or path; returns the names removed."""
        def _remove():
            target = str(Path(what).expanduser().resolve()) if "/" in what else None
            rows = self._db.execute("SELECT id, name FROM documents WHERE CAST(id AS TEXT)=? OR name=?"
                                    " OR source=? OR source LIKE ?",
                                    (what, what, target or what,
                                     (target.rstrip("/") + "/%") if target else "\0")).fetchall()
            for doc_id, _ in rows:
                self._delete_doc(doc_id)
            self._db.commit()
            return [name for _, name in rows]
        return await self._run(_remove)

    # -- outcomes and feedback ----------------------------------------------------------------------

    async def log_outcome(self, platform: str, channel: str, thread: str, question: str,
                          decision: str, score: float, sources: list[str]) -> int:
        def _log():
            cur = self._db.execute(
                "INSERT INTO outcomes (at, platform, channel, thread, question, decision, score, sources)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (time.time(), platform, channel, thread, question[:2000], decision, score,
                 json.dumps(sources)))
            self._db.commit()
            return cur.lastrowid
        return await self._run(_log)

    async def feedback(self, outcome_id: int, helpful: bool) -> bool:
        def _set():
            cur = self._db.execute("UPDATE outcomes SET feedback=? WHERE id=?", (int(helpful), outcome_id))
            self._db.commit()
            return cur.rowcount > 0
        return await self._run(_set)

    async def stats(self) -> dict:
        def _stats():
            db = self._db
            docs, chunks = db.execute("SELECT COUNT(*), COALESCE(SUM(chunks), 0) FROM documents").fetchone()
            decisions = dict(db.execute("SELECT decision, COUNT(*) FROM outcomes GROUP BY decision").fetchall())
            helpful = db.execute("SELECT COUNT(*) FROM outcomes WHERE feedback=1").fetchone()[0]
            unhelpful = db.execute("SELECT COUNT(*) FROM outcomes WHERE feedback=0").fetchone()[0]
            return {"documents": docs, "chunks": chunks, "model": self._meta("model") or "",
                    "dim": int(self._meta("dim") or 0),
                    "answers": decisions.get("answer", 0), "handovers": decisions.get("handover", 0),
                    "silent": decisions.get("silent", 0), "helpful": helpful, "not_helpful": unhelpful}
        return await self._run(_stats)
