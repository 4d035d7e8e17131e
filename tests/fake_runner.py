"""A stand-in for llama.cpp's server, for tests that need a fast or scripted chat model.

It speaks the same HTTP on a Unix socket as a real runner (`/health`, `/props`,
`/apply-template`, `/tokenize`, `/slots/N`, streamed `/v1/chat/completions`), so Confab's own
runner client, executor, scheduler, store and API all run as they do with the real model;
only the model is replaced. It runs on an event loop of its own in a thread, so a test's loop
(or a blocked engine thread) never stalls it. A gate lets a test hold every generation.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import threading
import time
from typing import Callable

from aiohttp import web

from engine.work.chat_runner import ChatRunner


def _words(body: dict) -> list[str]:
    return ["Hello", " from", " the", " fake", " model."]


class FakeRunnerServer:
    def __init__(self, answer: Callable[[dict], list[str]] = _words, token_s: float = 0.0):
        self.answer = answer
        self.token_s = token_s
        self.gate = threading.Event()
        self.gate.set()
        self.requests: list[dict] = []
        self.active = 0
        self.peak = 0
        self._dir = tempfile.mkdtemp(prefix="confab-fake-runner-")
        self.socket_path = os.path.join(self._dir, "runner.sock")
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._serve, name="fake-runner", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fake runner did not start")

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/props", self._props)
        app.router.add_post("/apply-template", self._template)
        app.router.add_post("/tokenize", self._tokenize)
        app.router.add_post("/slots/{id}", self._slot)
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.UnixSite(self._runner, self.socket_path).start())
        self._ready.set()
        self._loop.run_forever()

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _props(self, request: web.Request) -> web.Response:
        return web.json_response({"chat_template_caps": {}})

    async def _slot(self, request: web.Request) -> web.Response:
        return web.json_response({"id_slot": int(request.match_info["id"])})

    async def _template(self, request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"prompt": "\n".join(m.get("content") or "" for m in body["messages"])})

    async def _tokenize(self, request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"tokens": list(range(len(body.get("content", "").split()) + 4))})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            while not self.gate.is_set():
                await asyncio.sleep(0.02)
            pieces = self.answer(body)[: max(1, body.get("max_tokens") or 1)]
            for piece in pieces:
                if self.token_s:
                    await asyncio.sleep(self.token_s)
                await response.write(_event({"choices": [{"index": 0, "delta": {"content": piece},
                                                          "finish_reason": None}]}))
            await response.write(_event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                                         "usage": {"prompt_tokens": 8, "completion_tokens": len(pieces)}}))
            await response.write(b"data: [DONE]\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.active -= 1
        return response

    def runner(self, name: str, slots: int = 1, n_ctx: int = 4096) -> ChatRunner:
        return ChatRunner(name, socket_path=self.socket_path, slots=slots, n_ctx=n_ctx,
                          size_bytes=2**20)

    def loader(self, slots: int = 1, n_ctx: int = 4096):
        """An engine `load` hook: every model is this fake, with `slots` slots."""
        return lambda name, device: (self.runner(name, slots, n_ctx), 2**20)

    def close(self) -> None:
        async def stop():
            if self._runner is not None:
                await self._runner.cleanup()
        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        shutil.rmtree(self._dir, ignore_errors=True)


def _event(data: dict) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"


def wait_until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False
