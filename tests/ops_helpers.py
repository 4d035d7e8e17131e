"""A fast stand-in chat model for the operations tests (dashboard, limits, load, fuzz).

It sits behind the real engine, scheduler, store, API, the real `chat` executor and the real
runner client: only llama.cpp's server is replaced, by tests/fake_runner.py speaking its HTTP.
A gate lets a test hold a job running, so others wait in the queue deterministically.
"""
from __future__ import annotations

from pathlib import Path

from aiohttp import web

from models.registry import InstalledModel, Registry
from tests.fake_runner import FakeRunnerServer

FAKE_MODEL = "fake-chat"


class FakeRegistry(Registry):
    """One fake chat model; nothing to verify."""

    def __init__(self, data_dir: Path, models_dir: Path):
        super().__init__(data_dir, models_dir)
        self.model_file = Path(data_dir) / "fake-chat.gguf"

    def installed(self) -> dict[str, InstalledModel]:
        return {FAKE_MODEL: InstalledModel(FAKE_MODEL, "chat", "gguf", str(self.model_file), 2**20)}

    def verify(self, model, force: bool = False) -> list[str]:
        return []


def fake_engine(settings, token_s: float = 0.0, slots: int = 1):
    """An Engine on the fake model; `engine.gate` (set) lets jobs run, clear it to hold them.
    One slot unless asked: a held job then holds the model, as the tests of the queue need."""
    from engine import Engine
    server = FakeRunnerServer(token_s=token_s)
    registry = FakeRegistry(settings.data_path, settings.models_path)
    engine = Engine(settings.replace(default_chat_model=FAKE_MODEL), registry=registry,
                    load=server.loader(slots), unload=lambda instance: None, gpu_total=None)
    engine.gate = server.gate
    engine.fake_runner = server
    return engine


async def serve(app: web.Application, host: str = "127.0.0.1"):
    """Serve an app on a free loopback port: (runner, base URL)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    return runner, f"http://{host}:{site._server.sockets[0].getsockname()[1]}"


def chat_body(text: str = "Hi there", **kw) -> dict:
    return {"model": FAKE_MODEL, "messages": [{"role": "user", "content": text}], **kw}
