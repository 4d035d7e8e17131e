"""A throwaway redis-server on loopback, for the scale-out tests and the workers benchmark."""
from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time

from tests.conftest import free_port


class RedisMissing(RuntimeError):
    pass


@contextlib.contextmanager
def redis_server(databases: int = 64, port: int | None = None):
    """Yields redis://127.0.0.1:PORT for a new redis-server (no persistence); killed on exit."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise RedisMissing("redis-server is not installed (apt-get install redis-server; "
                           "`make system-deps`)")
    port = port or free_port()
    folder = tempfile.mkdtemp(prefix="confab-redis-")
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", folder, "--databases", str(databases)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)
