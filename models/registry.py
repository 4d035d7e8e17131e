"""The models installed on this machine: offline defaults found in their packages, models
pulled into the models folder, and local files registered with `confab models add`.

Each installed model is one folder or file with a manifest of its files' SHA-256; a model is
verified before its first load, and the verdict is cached by path, size and mtime.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from models import lora
from models.catalog import CATALOG, KINDS, CatalogEntry

log = logging.getLogger(__name__)


class ModelError(Exception):
    """A model cannot be found, registered or trusted; the message says why."""


@dataclass
class InstalledModel:
    name: str
    kind: str
    fmt: str
    path: str                                  # the file or folder the backend loads
    size: int                                  # bytes of memory expected when loaded
    source: str = "local"
    license: str = ""
    checksums: dict[str, str] = field(default_factory=dict)  # file path -> sha256
    options: dict = field(default_factory=dict)

    @property
    def parent(self) -> str:
        """The base model of an adapter (a LoRA), "" for a model of its own."""
        return self.options.get("base", "") if self.fmt in ADAPTER_FORMATS else ""

    def public(self) -> dict:
        out = {"id": self.name, "kind": self.kind, "format": self.fmt, "source": self.source,
               "license": self.license, "size_bytes": self.size}
        if self.parent:
            out["parent"] = self.parent
        return out


ADAPTER_FORMATS = ("gguf-lora", "diffusers-lora")


def sha256_file(path: str | Path, chunk: int = 4 * 2**20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _package_file(dist: str, relpath: str) -> Path | None:
    """Locate a file of an installed distribution without importing it."""
    try:
        files = importlib.metadata.files(dist) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if str(f) == relpath:
            p = Path(f.locate())
            return p if p.exists() else None
    return None


JOINING = ".joining"
STALE_JOIN_S = 600.0


@contextlib.contextmanager
def _private_copy(dst: Path):
    """A file written under a name of its own, then renamed over `dst` in one step: two
    processes joining the same model at once each write their own copy, and a reader sees the
    whole file or none."""
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=JOINING)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
        os.chmod(tmp, 0o644)     # mkstemp's 0600 would hide the model from other accounts
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _drop_stale_parts(folder: Path) -> None:
    """Half-written copies that a killed process left behind (a live one touches its copy often)."""
    now = time.time()
    for tmp in folder.glob(f".*{JOINING}"):
        with contextlib.suppress(OSError):
            if now - tmp.stat().st_mtime > STALE_JOIN_S:
                tmp.unlink()


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")


def check_name(name: str) -> str:
    """A model name is a plain word (letters, digits, . _ + -), never a path: it may become a
    folder name in the models folder, and it travels in API requests."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise ModelError(f"'{name}' is not a usable model name: use letters, digits and . _ + - "
                         "(up to 128), starting with a letter or digit.")
    return name


def _inside(path: str | Path, folder: Path) -> bool:
    """Whether `path` names something in `folder`, judged on the names (`..` included), so that
    a symlink an admin placed in the models folder still counts as inside."""
    folder = Path(os.path.abspath(folder))
    return Path(os.path.normpath(folder / path)).is_relative_to(folder)


def _is_cross_encoder(config: Path) -> bool:
    """A transformers classifier with one output: a cross-encoder's relevance score."""
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError):
        return False
    classifier = any(str(a).endswith("ForSequenceClassification") for a in data.get("architectures") or ())
    labels = data.get("num_labels") or len(data.get("id2label") or {}) or 2
    return classifier and labels == 1


def detect_kind(path: Path) -> tuple[str, str]:
    """(kind, format) recognised from a file or folder's contents."""
    if path.is_file():
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic == b"GGUF":
            return "chat", "gguf"
        if path.suffix == ".onnx" and Path(str(path) + ".json").exists():
            return "tts", "piper"
        raise ModelError(f"{path.name} is not a model Confab recognises (a GGUF file, or a Piper "
                         ".onnx voice with its .onnx.json beside it).")
    if path.is_dir():
        names = {p.name for p in path.iterdir()}
        if "model_index.json" in names:
            return "image", "diffusers"
        if "model.bin" in names and "config.json" in names and (
                "vocabulary.txt" in names or "vocabulary.json" in names or "tokenizer.json" in names):
            return "stt", "ct2-whisper"
        if "config.json" in names and _is_cross_encoder(path / "config.json"):
            return "reranker", "cross-encoder"
        if "modules.json" in names or "config_sentence_transformers.json" in names:
            return "embedding", "sentence-transformers"
        config = path / "config.json"
        if config.exists():
            try:
                arch = json.loads(config.read_text()).get("model_type", "")
            except ValueError:
                arch = ""
            if arch == "bark":
                return "tts", "bark"
        onnx = [p for p in path.iterdir() if p.suffix == ".onnx" and Path(str(p) + ".json").exists()]
        if onnx:
            return "tts", "piper"
        ggufs = sorted(p for p in path.iterdir() if p.suffix == ".gguf")
        if ggufs and any("mmproj" in p.name for p in ggufs):
            return "vision", "llava-gguf"
        if len(ggufs) == 1:
            return "chat", "gguf"
        raise ModelError(f"The folder {path} holds no model Confab recognises (diffusers "
                         "model_index.json, CTranslate2 Whisper, Bark, Piper voice, sentence-transformers "
                         "embeddings, a cross-encoder reranker, or GGUF).")
    raise ModelError(f"{path} does not exist.")


def _gguf_of(model: InstalledModel) -> str:
    """The GGUF file of a chat model (a file, or a folder of one)."""
    path = Path(model.path)
    if path.is_dir():
        files = sorted(f for f in path.glob("*.gguf") if "mmproj" not in f.name)
        return str(files[0]) if files else str(path)
    return str(path)


def _dir_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class Registry:
    """Which models are installed, where, and whether their bytes are the right ones."""

    def __init__(self, data_dir: Path, models_dir: Path):
        self.data_dir = Path(data_dir)
        self.models_dir = Path(models_dir)
        self._added_file = self.data_dir / "models.json"
        self._verified_file = self.data_dir / "verified.json"
        self._lock = threading.Lock()  # guards the two JSON files

    # -- discovery ----------------------------------------------------------------------------

    def installed(self) -> dict[str, InstalledModel]:
        found: dict[str, InstalledModel] = {}
        for entry in CATALOG:
            if entry.package:
                model = self._from_package(entry)
                if model:
                    found[model.name] = model
        if self.models_dir.is_dir():
            for manifest in sorted(self.models_dir.glob("*/confab-model.json")):
                try:
                    model = InstalledModel(**json.loads(manifest.read_text()))
                except (ValueError, TypeError) as e:
                    log.warning("ignoring unreadable manifest %s: %s", manifest, e)
                    continue
                if not _inside(model.path, manifest.parent) or not _NAME.fullmatch(model.name):
                    log.warning("ignoring %s: its name or path leaves the models folder", manifest)
                    continue
                found[model.name] = model
        for data in self._read_added().values():
            model = InstalledModel(**data)
            if Path(model.path).exists():
                found[model.name] = model
        # an adapter whose base is gone is not usable (its base may come back: kept on record)
        return {n: m for n, m in found.items() if not m.parent or m.parent in found}

    def get(self, name: str) -> InstalledModel | None:
        return self.installed().get(name)

    def _from_package(self, entry: CatalogEntry) -> InstalledModel | None:
        first = entry.files[0]
        if entry.joined:
            return self._joined_model(entry)
        path = _package_file(entry.package, first.path)
        if path is None:
            return None
        checksums = {str(path): first.sha256} if first.sha256 else {}
        target = path if entry.fmt in ("gguf", "piper") else path.parent
        return InstalledModel(entry.name, entry.kind, entry.fmt, str(target), entry.size,
                              entry.source, entry.license, checksums, dict(entry.options))

    def _joined_model(self, entry: CatalogEntry) -> InstalledModel | None:
        """A model whose weights ship in parts: joined once into the models folder."""
        parts = []
        for ref in entry.joined:
            dist, rel = ref.split(":", 1)
            p = _package_file(dist, rel)
            if p is None:
                return None
            parts.append(p)
        companions = []
        for f in entry.files[1:]:
            p = _package_file(entry.package, f.path)
            if p is None:
                return None
            companions.append((p, f.target or Path(f.path).name))
        folder = self.models_dir / entry.name
        joined = folder / (entry.files[0].target or "model.bin")
        expected = sum(p.stat().st_size for p in parts)
        if not joined.exists() or joined.stat().st_size != expected:
            folder.mkdir(parents=True, exist_ok=True)
            _drop_stale_parts(folder)
            with _private_copy(joined) as out:
                for p in parts:
                    with open(p, "rb") as src:
                        shutil.copyfileobj(src, out, 8 * 2**20)
        for src, name in companions:
            dst = folder / name
            if not dst.exists():
                with _private_copy(dst) as out, open(src, "rb") as f:
                    shutil.copyfileobj(f, out)
        sha = entry.files[0].sha256
        return InstalledModel(entry.name, entry.kind, entry.fmt, str(folder), entry.size,
                              entry.source, entry.license, {str(joined): sha} if sha else {},
                              dict(entry.options))

    # -- registering ----------------------------------------------------------------------------

    def _read_added(self) -> dict[str, dict]:
        try:
            return json.loads(self._added_file.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as e:
            raise ModelError(f"{self._added_file} is damaged ({e}); fix or remove it.") from None

    def add(self, path: str | Path, name: str | None = None, kind: str | None = None,
            base: str | None = None, scale: float | None = None) -> InstalledModel:
        p = Path(path).expanduser().resolve()
        if not p.exists():
            raise ModelError(f"{p} does not exist.")
        if kind == "lora" or (kind is None and lora.sniff(p)):
            return self.add_adapter(p, base, name, scale)
        if base is not None or scale is not None:
            raise ModelError("--base and --scale are for adapters (--kind lora).")
        detected_kind, fmt = detect_kind(p)
        if kind and kind not in KINDS:
            raise ModelError(f"Unknown kind '{kind}'; use one of {', '.join(KINDS)}.")
        if kind == "vision" and fmt == "gguf":
            fmt = "llava-gguf"
        if name is None:
            name = re.sub(r"[^A-Za-z0-9._+-]+", "-", p.stem if p.is_file() else p.name).strip("-.")
        name = check_name(name)
        files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file() and f.stat().st_size > 2**20]
        if fmt == "piper" and p.is_file():
            files.append(Path(str(p) + ".json"))
        checksums = {str(f): sha256_file(f) for f in files}
        size = int(_dir_size(p) * 1.2) + 64 * 2**20
        model = InstalledModel(name, kind or detected_kind, fmt, str(p), size, "local", "",
                               checksums, {})
        return self._record(model)

    def _record(self, model: InstalledModel) -> InstalledModel:
        with self._lock:
            added = self._read_added()
            added[model.name] = asdict(model)
            self.data_dir.mkdir(parents=True, exist_ok=True)
            tmp = self._added_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(added, indent=2))
            os.replace(tmp, self._added_file)
        self._remember_verified(model)
        return model

    def add_adapter(self, path: Path, base: str | None = None, name: str | None = None,
                    scale: float | None = None) -> InstalledModel:
        """Register a LoRA adapter of an installed chat (GGUF adapter) or image (diffusers
        safetensors) model, checked against its base's tensors first. Without `base`, the one
        installed model it fits is its base."""
        kind = lora.sniff(path)
        if kind is None:
            raise ModelError(f"{path.name} is not a LoRA adapter Confab recognises: a chat adapter "
                             "is a GGUF of general.type 'adapter' (llama.cpp's convert_lora_to_gguf.py), "
                             "an image adapter a .safetensors file from diffusers' save_lora_weights "
                             "or PEFT.")
        try:
            lora.check_file(path)
        except lora.AdapterError as e:
            raise ModelError(str(e)) from None
        if scale is None:
            scale = 1.0
        if not -4.0 <= scale <= 4.0:
            raise ModelError(f"--scale {scale} is out of range: use a number from -4 to 4 (1 applies "
                             "the adapter as trained, 0 not at all).")
        installed = self.installed()
        bases = [m for m in installed.values() if m.kind == kind and not m.parent
                 and m.fmt == ("gguf" if kind == "chat" else "diffusers")]
        if base is not None:
            model = installed.get(base)
            if model is None:
                raise ModelError(f"The base model '{base}' is not installed; install it first, or "
                                 f"name one of the installed {kind} models: "
                                 f"{', '.join(sorted(m.name for m in bases)) or 'none'}.")
            if model not in bases:
                raise ModelError(f"{path.name} is a {kind} adapter, but '{base}' is a {model.kind} "
                                 f"model ({model.fmt}); name a {kind} model as its base.")
            info = self._inspect(path, model)
        else:
            fits, misfits = [], []
            for candidate in bases:
                try:
                    fits.append((candidate, self._inspect(path, candidate)))
                except ModelError as e:
                    misfits.append(f"{candidate.name}: {e}")
            if len(fits) != 1:
                raise ModelError(f"Say which model {path.name} adapts with --base: "
                                 + (f"it fits {', '.join(m.name for m, _ in fits)}." if fits
                                    else f"it fits none of the installed {kind} models"
                                    + (f" ({'; '.join(misfits)})." if misfits else ".")))
            model, info = fits[0]
        if name is None:
            stem = path.stem if path.is_file() else path.name
            name = re.sub(r"[^A-Za-z0-9._+-]+", "-", stem).strip("-.")
        name = check_name(name)
        if name in installed and not installed[name].parent:
            raise ModelError(f"'{name}' is already the name of an installed model; choose another "
                             "with --name.")
        file = Path(info.path)
        adapter = InstalledModel(name, model.kind, info.fmt, str(file), file.stat().st_size,
                                 "local", "", {str(file): sha256_file(file)},
                                 {"base": model.name, "scale": float(scale), "rank": info.rank,
                                  "alpha": info.alpha, "layers": info.layers})
        return self._record(adapter)

    @staticmethod
    def _inspect(path: Path, base: InstalledModel) -> lora.AdapterInfo:
        try:
            if base.kind == "chat":
                return lora.inspect_gguf(path, _gguf_of(base))
            return lora.inspect_safetensors(path, base.path)
        except (lora.AdapterError, OSError, ValueError) as e:
            raise ModelError(f"{e}" if str(e).startswith(path.name) else
                             f"{path.name} does not fit '{base.name}': {e}") from None

    def adapters_of(self, base: str, installed: dict[str, InstalledModel] | None = None) -> list[InstalledModel]:
        installed = self.installed() if installed is None else installed
        return sorted((m for m in installed.values() if m.parent == base), key=lambda m: m.name)

    def remove(self, name: str) -> bool:
        with self._lock:
            added = self._read_added()
            if name not in added:
                return False
            del added[name]
            self._added_file.write_text(json.dumps(added, indent=2))
            return True

    # -- trust ----------------------------------------------------------------------------------

    def _stamp(self, path: str) -> str:
        st = os.stat(path)
        return f"{path}|{st.st_size}|{st.st_mtime_ns}"

    def _read_verified(self) -> dict[str, str]:
        try:
            return json.loads(self._verified_file.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def _remember_verified(self, model: InstalledModel) -> None:
        with self._lock:
            seen = self._read_verified()
            for path, sha in model.checksums.items():
                seen[self._stamp(path)] = sha
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._verified_file.write_text(json.dumps(seen))

    def verify(self, model: InstalledModel, force: bool = False) -> list[str]:
        """Problems with the model's files; empty when every checksum matches."""
        problems = []
        seen = {} if force else self._read_verified()
        for path, expected in model.checksums.items():
            if not os.path.exists(path):
                problems.append(f"{path} is missing")
                continue
            if not force and seen.get(self._stamp(path)) == expected:
                continue
            actual = sha256_file(path)
            if actual != expected:
                problems.append(f"{path}: sha256 {actual[:12]}… but expected {expected[:12]}…")
        if not problems:
            self._remember_verified(model)
        return problems
