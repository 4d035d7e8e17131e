"""A fast stand-in chat model for the operations tests (dashboard, limits, load, fuzz).

It sits behind the real engine, scheduler, store, API and the real `chat` executor: only the
llama.cpp object is replaced, by one with the same three members (`n_ctx`, `count_tokens`,
`chat`). A gate lets a test hold a job running, so others wait in the queue deterministically.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

from aiohttp import web

from models.llama_chat import ChatOutput
from models.registry import InstalledModel, Registry

FAKE_MODEL = "fake-chat"


class FakeLlama:
    n_ctx = 4096

    def __init__(self, gate: threading.Event, token_s: float = 0.0):
        self.gate, self.token_s = gate, token_s

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def chat(self, req, on_token, cancelled) -> ChatOutput:
        while not self.gate.wait(0.02):
            if cancelled():
                return ChatOutput("", "cancelled", 1, 0, 0)
        words = ["Hello", " from", " the", " fake", " model."][: max(1, req.max_tokens)]
        for w in words:
            if cancelled():
                return ChatOutput("", "cancelled", 1, 0, 0)
            if self.token_s:
                time.sleep(self.token_s)
            on_token(w)
        prompt = sum(self.count_tokens(m["content"]) for m in req.messages)
        return ChatOutput("".join(words), "stop", prompt, len(words), 0)


class FakeRegistry(Registry):
    """One fake chat model; nothing to verify."""

    def __init__(self, data_dir: Path, models_dir: Path):
        super().__init__(data_dir, models_dir)
        self.model_file = Path(data_dir) / "fake-chat.gguf"

    def installed(self) -> dict[str, InstalledModel]:
        return {FAKE_MODEL: InstalledModel(FAKE_MODEL, "chat", "gguf", str(self.model_file), 2**20)}

    def verify(self, model, force: bool = False) -> list[str]:
        return []


def fake_engine(settings, token_s: float = 0.0):
    """An Engine on the fake model; `engine.gate` (set) lets jobs run, clear it to hold them."""
    from engine import Engine
    gate = threading.Event()
    gate.set()
    registry = FakeRegistry(settings.data_path, settings.models_path)
    engine = Engine(settings.replace(default_chat_model=FAKE_MODEL), registry=registry,
                    load=lambda name, device: (FakeLlama(gate, token_s), 2**20),
                    unload=lambda instance: None, gpu_total=None)
    engine.gate = gate
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
