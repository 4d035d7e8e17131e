"""A chat "model" that answers at once, loaded through the engine's own loader hook, so that an
adapter benchmark measures the adapter, the engine's queue, store and runner client, and nothing
else: a stand-in for llama.cpp's server (tests/fake_runner.py) that streams a fixed answer."""
from __future__ import annotations

from tests.fake_runner import FakeRunnerServer

_server: FakeRunnerServer | None = None


def load_instant(name: str, device: str):
    global _server
    if _server is None:
        _server = FakeRunnerServer(lambda body: ["Instant ", "answer", "."])
    return _server.runner(name, slots=4, n_ctx=2048), 1
