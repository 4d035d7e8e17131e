"""llama.cpp's own serving engine, `llama-server`: built from the source that the pinned
llama-cpp-python release ships, and run as one supervised process per loaded chat model.

The build takes the llama-cpp-python sdist of the installed version (pip fetches it from the
package index, usually from its own cache), builds only the `llama-server` target of its
`vendor/llama.cpp` tree with nothing downloaded at build time (no curl, no prebuilt web UI),
and keeps the binary in Confab's cache folder under the version and backend, so a second set-up
costs nothing. On a host with an NVIDIA GPU and nvcc the build is CUDA's.

A runner listens on a Unix socket in a private folder (never reachable from outside), is in
its own process group, and receives SIGKILL when the thread that started it dies (which is
Confab's model-loading thread): runners never outlive Confab.
"""
from __future__ import annotations

import ctypes
import hashlib
import http.client
import importlib.metadata
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

DIST = "llama-cpp-python"
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_TOOLS=ON",
    # nothing downloaded at build time: no curl, no web UI assets from a hub
    "-DLLAMA_CURL=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_OPENSSL=OFF",
    # portable: a binary tuned with -march=native may not run on another CPU of the same host
    # family (the x86 build still gets its AVX2 kernels)
    "-DGGML_NATIVE=OFF", "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_APP=OFF",
)


class RunnerError(RuntimeError):
    """The runner could not be built, found or started; the message says why and what to do."""


# -- where the binary lives -----------------------------------------------------------------------

def pinned_version() -> str:
    try:
        return importlib.metadata.version(DIST)
    except importlib.metadata.PackageNotFoundError:
        raise RunnerError("llama-cpp-python is not installed: pip install 'confab-bot[chat]'") from None


def gpu_present() -> bool:
    return Path("/dev/nvidiactl").exists() or Path("/proc/driver/nvidia/version").exists()


def build_backend() -> str:
    """cuda when this host has an NVIDIA GPU and nvcc, else cpu (CONFAB_RUNNER_BACKEND overrides)."""
    chosen = os.environ.get("CONFAB_RUNNER_BACKEND", "").strip().lower()
    if chosen in ("cpu", "cuda"):
        return chosen
    return "cuda" if gpu_present() and shutil.which("nvcc") else "cpu"


def cache_root() -> Path:
    explicit = os.environ.get("CONFAB_RUNNER_CACHE")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "confab" / "llama-server"


def _flags(backend: str) -> list[str]:
    flags = list(CMAKE_FLAGS)
    if backend == "cuda":
        flags.append("-DGGML_CUDA=ON")
    extra = os.environ.get("CONFAB_RUNNER_CMAKE_ARGS", "").split()
    return flags + extra


def binary_path(version: str | None = None, backend: str | None = None) -> Path:
    version = version or pinned_version()
    backend = backend or build_backend()
    tag = hashlib.sha256(" ".join(_flags(backend)).encode()).hexdigest()[:8]
    return cache_root() / f"{version}-{backend}-{tag}" / "llama-server"


def find_binary() -> Path:
    explicit = os.environ.get("CONFAB_LLAMA_SERVER")
    if explicit:
        path = Path(explicit)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise RunnerError(f"CONFAB_LLAMA_SERVER={explicit} is not an executable file.")
        return path
    path = binary_path()
    if not path.is_file():
        raise RunnerError("llama.cpp's server (llama-server) is not built yet: run `confab runner "
                          "build` (make run and make test do it), about 5 minutes on two cores.")
    return path


# -- the build ---------------------------------------------------------------------------------

def _fetch_source(version: str, into: Path) -> Path:
    """The sdist of the pinned llama-cpp-python (pip reuses its cache), unpacked: its llama.cpp."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q",
                    f"{DIST}=={version}", "--no-binary", ":all:", "--no-deps",
                    "-d", str(into)], check=True)
    archive = next(into.glob("llama_cpp_python-*.tar.gz"), None)
    if archive is None:
        raise RunnerError(f"pip did not bring the source archive of {DIST}=={version}.")
    prefix = f"{archive.name.removesuffix('.tar.gz')}/vendor/llama.cpp/"
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
        if not members:
            raise RunnerError(f"{archive.name} has no vendor/llama.cpp tree to build llama-server from.")
        tar.extractall(into, members=members, filter="data")
    archive.unlink()
    return into / prefix


def build(jobs: int | None = None, force: bool = False) -> Path:
    """Build llama-server from the pinned source, once per version and backend; its path."""
    version, backend = pinned_version(), build_backend()
    target = binary_path(version, backend)
    if target.is_file() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    jobs = jobs or os.cpu_count() or 2
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="confab-llama-build-") as tmp:
        source = _fetch_source(version, Path(tmp))
        build_dir = Path(tmp) / "build"
        log.info("building llama-server %s (%s) from %s's source", version, backend, DIST)
        subprocess.run(["cmake", "-S", str(source), "-B", str(build_dir), *_flags(backend)],
                       check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["cmake", "--build", str(build_dir), "--target", "llama-server",
                        "-j", str(jobs)], check=True, stdout=subprocess.DEVNULL)
        built = build_dir / "bin" / "llama-server"
        partial = target.with_name(f".llama-server.{os.getpid()}")
        shutil.copy2(built, partial)
        os.replace(partial, target)   # whole or absent, whoever else builds at the same time
    (target.parent / "build.json").write_text(json.dumps(
        {"llama_cpp_python": version, "backend": backend, "flags": _flags(backend),
         "seconds": round(time.monotonic() - started, 1)}))
    return target


# -- one runner ---------------------------------------------------------------------------------

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:   # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


@dataclass
class RunnerSpec:
    """What a runner is started with; the placement decides `gpu_layers`."""
    model_path: str
    slots: int = 4
    context_per_slot: int = 4096
    threads: int = 0
    gpu_layers: int = 0
    mmproj: str = ""
    slot_dir: str = ""
    prompt_cache_mb: int = 0
    batch: int = 2048
    ubatch: int = 512
    extra: list[str] = field(default_factory=list)

    def argv(self, binary: Path, socket_path: str) -> list[str]:
        args = [str(binary), "-m", self.model_path, "--host", socket_path,
                "-c", str(self.context_per_slot * self.slots), "-np", str(self.slots),
                "--no-kv-unified", "-ngl", str(self.gpu_layers),
                "-b", str(self.batch), "-ub", str(self.ubatch),
                "--cache-ram", str(self.prompt_cache_mb), "--no-ui", "--jinja",
                "--metrics", "--timeout", "600"]
        if self.threads:
            args += ["-t", str(self.threads), "-tb", str(self.threads)]
        if self.mmproj:
            args += ["--mmproj", self.mmproj]
        if self.slot_dir:
            args += ["--slot-save-path", self.slot_dir]
        return args + list(self.extra)


RUNNER_DIR_PREFIX = "confab-runner-"
STALE_RUNNER_DIR_S = 600.0


def _listening(socket_path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        try:
            s.connect(str(socket_path))
            return True
        except OSError:
            return False


def sweep_dead_runner_folders() -> int:
    """Remove the socket folders of runners that died with a SIGKILLed Confab (which had no
    chance to tidy up). A folder goes only when it is ours, older than STALE_RUNNER_DIR_S and
    nothing listens on its socket, so a runner still starting, or another Confab's live one,
    keeps its own."""
    removed = 0
    now = time.time()
    for folder in Path(tempfile.gettempdir()).glob(RUNNER_DIR_PREFIX + "*"):
        try:
            st = folder.lstat()
        except OSError:
            continue
        if not folder.is_dir() or st.st_uid != os.getuid() or now - st.st_mtime < STALE_RUNNER_DIR_S:
            continue
        if _listening(folder / "runner.sock"):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed += 1
    return removed


class RunnerProcess:
    """A started llama-server. `start()` blocks until it answers /health, or raises RunnerError
    with the end of its log."""

    def __init__(self, spec: RunnerSpec, binary: Path | None = None, log_dir: str | None = None):
        self.spec = spec
        self.binary = binary or find_binary()
        self._dir = tempfile.mkdtemp(prefix=RUNNER_DIR_PREFIX)   # short: a socket path has 108 bytes
        self.socket_path = os.path.join(self._dir, "runner.sock")
        self.log_path = os.path.join(log_dir or self._dir, f"runner-{os.getpid()}-{id(self):x}.log")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 120.0) -> None:
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(self.spec.argv(self.binary, self.socket_path),
                                         stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                         process_group=0, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RunnerError(f"llama-server exited with code {self.proc.returncode} while "
                                  f"loading {os.path.basename(self.spec.model_path)}: {self.log_tail()}")
            if self.healthy():
                return
            time.sleep(0.05)
        self.stop()
        raise RunnerError(f"llama-server did not become ready in {timeout_s:.0f} s: {self.log_tail()}")

    def healthy(self) -> bool:
        try:
            status, _ = unix_request(self.socket_path, "GET", "/health", timeout=2)
            return status == 200
        except OSError:
            return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def rss_bytes(self) -> int:
        if not self.alive():
            return 0
        try:
            with open(f"/proc/{self.proc.pid}/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            return 0

    def log_tail(self, lines: int = 8) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return " | ".join(f.read().decode("utf-8", "replace").strip().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, grace_s: float = 5.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(grace_s)
            except ProcessLookupError:
                pass
        shutil.rmtree(self._dir, ignore_errors=True)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = socket_path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


def unix_request(socket_path: str, method: str, path: str, body: dict | None = None,
                 timeout: float = 30) -> tuple[int, dict]:
    """A blocking HTTP request to a runner's socket (for start-up checks)."""
    conn = _UnixConnection(socket_path, timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
        resp = conn.getresponse()
        raw = resp.read()
        try:
            return resp.status, json.loads(raw or b"{}")
        except ValueError:
            return resp.status, {"raw": raw.decode("utf-8", "replace")}
    except http.client.HTTPException as e:
        raise OSError(str(e)) from e
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    """`python -m models.llama_runner build`: what the set-up runs."""
    args = argv if argv is not None else sys.argv[1:]
    if not args or args[0] not in ("build", "path"):
        print("usage: python -m models.llama_runner build|path", file=sys.stderr)
        return 2
    if args[0] == "path":
        print(binary_path())
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    target = binary_path()
    if target.is_file():
        print(f"llama-server is built: {target}")
        return 0
    print(f"Building llama.cpp's server from the {DIST} {pinned_version()} source "
          f"({build_backend()}); about 5 minutes on two cores, once.", flush=True)
    started = time.monotonic()
    path = build()
    print(f"llama-server built in {time.monotonic() - started:.0f} s: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
