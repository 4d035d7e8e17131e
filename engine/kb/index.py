"""The knowledge base's storage: documents, chunks and their vectors in `DATA_DIR/kb.db`.

Its own SQLite file beside the store's `confab.db`, for three reasons: vector search needs the
sqlite-vec extension loaded into the connection, and Python builds without extension loading
(pyenv's default) need another SQLite library for that (pysqlite3), which should not own the
job queue; `confab kb add` runs as a separate process while Confab serves, and a bulk import
then never holds the lock that job writes wait on; and a team can copy, back up or rebuild its
knowledge base without touching jobs and conversations. All work runs on one dedicated thread,
as in the store.

Vectors live in `vec0` virtual tables with cosine distance; a chunk's rowid is its id there:
`chunk_vec` holds each chunk (under its title and heading), `head_vec` what the chunk says it
answers: a FAQ entry's question, so that a customer's question is matched against it as a
question, or else the chunk's title and heading; `sentence_vec` each sentence of a chunk
embedded alone (so that a long passage's one answering sentence is not diluted by the rest).
Keywords live in an FTS5 table (`chunk_fts`, Porter stemming) ranked by BM25. `candidates` runs the three searches
and fuses them by reciprocal rank. A document is re-embedded only when its content hash (bytes,
chunk size, embedding model and the chunker's version) changes.
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

from engine.errors import BackendMissing, UserError
from engine.kb.lexical import Vocabulary
from engine.kb.parse import SUFFIXES, Chunk, ParseError, chunk, parse_file, sentences

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
    link TEXT NOT NULL,
    faq INTEGER NOT NULL DEFAULT 0    -- a FAQ entry: section is its question
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
CREATE VIRTUAL TABLE IF NOT EXISTS chunk_fts USING fts5(title, section, body,
    tokenize='porter unicode61 remove_diacritics 2');
CREATE TABLE IF NOT EXISTS sentence_vec (    -- each sentence of a chunk, embedded on its own
    chunk_id INTEGER NOT NULL REFERENCES chunks(id) ON DELETE CASCADE,
    ord INTEGER NOT NULL,
    embedding BLOB NOT NULL,                 -- float32, normalised
    PRIMARY KEY (chunk_id, ord)
);
"""
CHUNKER_VERSION = 4     # part of the content hash: documents re-chunk when it changes
RRF_K = 60              # reciprocal rank fusion's constant (Cormack et al.)
FTS_WEIGHTS = (1.5, 3.0, 1.0)   # BM25 column weights: title, section (a FAQ's question), body


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
    faq: bool = False


@dataclass
class Candidate:
    """A chunk found by hybrid search, with what each search said about it."""
    hit: Hit
    cosine: float                  # question vs. the chunk under its title and heading
    heading_cosine: float          # question vs. the FAQ entry's question, or the title and heading
    bm25: float                    # FTS5's BM25, higher is better (0 when keywords missed it)
    ranks: dict[str, int]          # rank in each list that found it: vector, heading, keyword
    rrf: float                     # reciprocal rank fusion of those ranks
    sentence_cosine: float | None = None   # question vs. the chunk's nearest sentence (None: not stored)

    @property
    def faq_cosine(self) -> float:
        return self.heading_cosine if self.hit.faq else 0.0


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


def heading_text(title: str, c: Chunk) -> str:
    """What a chunk says it answers: a FAQ entry's question, else its title and heading."""
    if c.faq:
        return c.section
    return " — ".join(x for x in (title, c.section) if x)


def embed_text(title: str, section: str, text: str) -> str:
    """What is embedded for a chunk: its text under its titles, so they count in retrieval."""
    head = " — ".join(x for x in (title, section) if x)
    return f"{head}\n{text}" if head else text


class KnowledgeBase:
    def __init__(self, path: str | Path, embed: Embed, model: str = "", chunk_chars: int = 900,
                 max_file_bytes: int = 20 * 2**20, common_words: frozenset[str] = frozenset()):
        self.path = Path(path)
        self.common_words = common_words      # real words, never taken for typos (lexical.py)
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
        columns = [r[1] for r in self._db.execute("PRAGMA table_info(chunks)").fetchall()]
        if columns and "faq" not in columns:    # a knowledge base from before hybrid search
            self._db.execute("ALTER TABLE chunks ADD COLUMN faq INTEGER NOT NULL DEFAULT 0")
        self._db.executescript(SCHEMA)
        if self._db.execute("SELECT COUNT(*) FROM chunk_fts").fetchone()[0] == 0:
            self._db.execute("INSERT INTO chunk_fts (rowid, title, section, body) SELECT c.id, d.title,"
                             " c.section, c.text FROM chunks c JOIN documents d ON d.id = c.doc_id")
        self._db.commit()
        self._vocab: tuple[int, Vocabulary] | None = None

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
        if not self._has_table("head_vec"):
            self._db.execute(f"CREATE VIRTUAL TABLE head_vec USING "
                             f"vec0(embedding float[{dim}] distance_metric=cosine)")

    def _has_table(self, name: str) -> bool:
        return self._db.execute("SELECT 1 FROM sqlite_master WHERE name=?", (name,)).fetchone() is not None

    def _delete_doc(self, doc_id: int) -> None:
        for table in ("chunk_vec", "head_vec", "chunk_fts"):
            if table == "chunk_fts" or self._has_table(table):
                self._db.execute(f"DELETE FROM {table} WHERE rowid IN (SELECT id FROM chunks WHERE doc_id=?)",
                                 (doc_id,))
        self._db.execute("DELETE FROM sentence_vec WHERE chunk_id IN (SELECT id FROM chunks WHERE doc_id=?)",
                         (doc_id,))
        self._db.execute("DELETE FROM chunks WHERE doc_id=?", (doc_id,))
        self._db.execute("DELETE FROM documents WHERE id=?", (doc_id,))

    # -- ingestion ---------------------------------------------------------------------------

    def content_hash(self, data: bytes) -> str:
        h = hashlib.sha256(data)
        h.update(f"|chunk={self.chunk_chars}|model={self.model}|v={CHUNKER_VERSION}".encode())
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
                texts = [embed_text(doc.title, c.section, c.text) for c in chunks]
                heads = [heading_text(doc.title, c) for c in chunks]
                said = [sentences(c.text) for c in chunks]
                vectors = await self.embed(texts + heads + [s for ss in said for s in ss])
                n = len(texts)
                by_chunk, at = [], 2 * n
                for ss in said:
                    by_chunk.append(vectors[at:at + len(ss)])
                    at += len(ss)
                await self._run(self._store_doc, path, doc, chunks, vectors[:n], vectors[n:2 * n], by_chunk,
                                digest)
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

    def _store_doc(self, path: Path, doc, chunks: list[Chunk], vectors, head_vectors, sentence_vectors,
                   digest: str) -> None:
        import numpy as np
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
            for i, (c, v, hv, sv) in enumerate(zip(chunks, vectors, head_vectors, sentence_vectors)):
                cid = db.execute("INSERT INTO chunks (doc_id, ord, section, text, link, faq) VALUES (?, ?, ?, ?, ?, ?)",
                                 (doc_id, i, c.section, c.text, c.link, int(c.faq))).lastrowid
                db.execute("INSERT INTO chunk_vec (rowid, embedding) VALUES (?, ?)",
                           (cid, sqlite_vec.serialize_float32([float(x) for x in v])))
                db.execute("INSERT INTO head_vec (rowid, embedding) VALUES (?, ?)",
                           (cid, sqlite_vec.serialize_float32([float(x) for x in hv])))
                db.execute("INSERT INTO chunk_fts (rowid, title, section, body) VALUES (?, ?, ?, ?)",
                           (cid, doc.title, c.section, c.text))
                for k, vec in enumerate(np.asarray(sv, dtype=np.float32)):
                    vec = vec / (np.linalg.norm(vec) or 1.0)
                    db.execute("INSERT INTO sentence_vec (chunk_id, ord, embedding) VALUES (?, ?, ?)",
                               (cid, k, vec.astype(np.float32).tobytes()))
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

    def _vocabulary(self) -> Vocabulary:
        """The knowledge base's words, rebuilt when any connection (`confab kb add` in another
        process too) has changed the file since."""
        version = (self._db.execute("PRAGMA data_version").fetchone()[0],
                   self._db.execute("SELECT COALESCE(MAX(updated), 0), COUNT(*) FROM documents").fetchone())
        if self._vocab is None or self._vocab[0] != version:
            rows = self._db.execute("SELECT d.title, c.section, c.text FROM chunks c"
                                    " JOIN documents d ON d.id = c.doc_id").fetchall()
            self._vocab = (version, Vocabulary([" ".join(r) for r in rows], self.common_words))
        return self._vocab[1]

    async def vocabulary(self) -> Vocabulary:
        return await self._run(self._vocabulary)

    async def candidates(self, question: str, vector, n: int = 20) -> tuple[list[Candidate], Vocabulary]:
        """Hybrid search: the `n` nearest chunks, the `n` nearest headings and FAQ questions and
        the `n` best BM25 matches of the question's words, fused by reciprocal rank, best first;
        with the vocabulary the keywords were read with."""
        import numpy as np

        def _candidates():
            import sqlite_vec
            vocab = self._vocabulary()
            if self._meta("dim") is None:
                return [], vocab
            q = np.asarray(vector, dtype=np.float32)
            blob = sqlite_vec.serialize_float32([float(x) for x in q])
            lists: dict[str, list[int]] = {}
            lists["vector"] = [r[0] for r in self._db.execute(
                "SELECT rowid FROM chunk_vec WHERE embedding MATCH ? AND k = ? ORDER BY distance",
                (blob, int(n))).fetchall()]
            if self._has_table("head_vec"):
                lists["heading"] = [r[0] for r in self._db.execute(
                    "SELECT rowid FROM head_vec WHERE embedding MATCH ? AND k = ? ORDER BY distance",
                    (blob, int(n))).fetchall()]
            bm25: dict[int, float] = {}
            query = vocab.keyword_query(vocab.question(question))
            if query:
                rows = self._db.execute(
                    "SELECT rowid, bm25(chunk_fts, ?, ?, ?) AS s FROM chunk_fts WHERE chunk_fts MATCH ?"
                    " ORDER BY s LIMIT ?", (*FTS_WEIGHTS, query, int(n))).fetchall()
                lists["keyword"] = [r[0] for r in rows]
                bm25 = {r[0]: -float(r[1]) for r in rows}
            ranks: dict[int, dict[str, int]] = {}
            for name, ids in lists.items():
                for rank, cid in enumerate(ids, 1):
                    ranks.setdefault(cid, {})[name] = rank
            if not ranks:
                return [], vocab
            ids = list(ranks)
            marks = ",".join("?" * len(ids))
            rows = {r[0]: r for r in self._db.execute(
                "SELECT c.id, c.text, c.section, c.link, d.title, d.name, d.link, c.faq FROM chunks c"
                f" JOIN documents d ON d.id = c.doc_id WHERE c.id IN ({marks})", ids).fetchall()}
            vecs = {r[0]: np.frombuffer(r[1], dtype=np.float32) for r in self._db.execute(
                f"SELECT rowid, embedding FROM chunk_vec WHERE rowid IN ({marks})", ids).fetchall()}
            head_vecs = {}
            if self._has_table("head_vec"):
                head_vecs = {r[0]: np.frombuffer(r[1], dtype=np.float32) for r in self._db.execute(
                    f"SELECT rowid, embedding FROM head_vec WHERE rowid IN ({marks})", ids).fetchall()}
            qn = q / (np.linalg.norm(q) or 1.0)
            nearest_sentence: dict[int, float] = {}
            for cid, blob_ in self._db.execute(
                    f"SELECT chunk_id, embedding FROM sentence_vec WHERE chunk_id IN ({marks})", ids).fetchall():
                sim = float(np.frombuffer(blob_, dtype=np.float32) @ qn)
                nearest_sentence[cid] = max(nearest_sentence.get(cid, -1.0), sim)

            def cos(v):
                return float(v @ qn / (np.linalg.norm(v) or 1.0))
            out = []
            for cid in ids:
                r = rows.get(cid)
                if r is None or cid not in vecs:
                    continue
                hit = Hit(cid, cos(vecs[cid]), r[1], r[2], r[3] or r[6], r[4], r[5], bool(r[7]))
                out.append(Candidate(hit, hit.score, cos(head_vecs[cid]) if cid in head_vecs else 0.0,
                                     bm25.get(cid, 0.0), ranks[cid],
                                     sum(1.0 / (RRF_K + rk) for rk in ranks[cid].values()),
                                     nearest_sentence.get(cid)))
            out.sort(key=lambda c: -c.rrf)
            return out, vocab
        return await self._run(_candidates)

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
