"""Chat on llama.cpp's serving engine: one runner per loaded chat model, fed slot by slot.

A `ChatRunner` is what the memory manager holds for a loaded chat model: a `llama-server`
process of our own on a Unix socket (or an OpenAI-compatible engine elsewhere, named in
configuration), its slots, and the model's sampling defaults. The scheduler decides which job
goes next and how many share a model at once; the runner decides which slot a job gets: the
one that holds its conversation's prefix when that slot is free, so turn N of a thread only
reads the new turn. A runner stopped for eviction or shutdown saves its slots to disk, and the
next load restores a conversation's slot when that conversation comes back.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import aiohttp

from engine.errors import BackendFailed, PromptTooLong, UserError
from models.llama_runner import RunnerProcess, unix_request

log = logging.getLogger(__name__)

SAMPLING = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "presence_penalty",
            "frequency_penalty")
# llama.cpp's own defaults, the last resort when neither the catalog nor the file says
LLAMA_DEFAULTS = {"temperature": 0.8, "top_p": 0.95, "top_k": 40, "min_p": 0.05,
                  "repeat_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0}
SLOT_FILES_MAX = 64       # saved conversations kept per model (oldest removed first)
ANSWER_ROOM_MIN = 16      # a prompt must leave at least this many tokens for the answer


class RunnerGone(BackendFailed):
    """The runner died or stopped answering while a job was on it."""


@dataclass
class Slot:
    id: int
    conversation: str = ""
    busy: bool = False
    last_used: float = 0.0


@dataclass
class StreamedChat:
    """What one generation produced, as the runner streamed it."""
    text: str = ""
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tool_calls: list[dict] = field(default_factory=list)
    logprobs: list[dict] = field(default_factory=list)


def conversation_file(conversation: str) -> str:
    return hashlib.sha256(conversation.encode()).hexdigest()[:32] + ".bin"


class ChatRunner:
    """One loaded chat model served by llama.cpp's server (ours) or a remote engine."""

    def __init__(self, name: str, *, process: RunnerProcess | None = None, socket_path: str = "",
                 base_url: str = "",
                 api_key: str = "", remote_model: str = "", slots: int = 1, n_ctx: int = 4096,
                 defaults: dict | None = None, slot_dir: str = "", size_bytes: int = 0,
                 template_tools: bool = False, adapters: list[str] | None = None):
        self.name = name
        self.process = process
        self.socket_path = socket_path or (process.socket_path if process else "")
        self.local = bool(self.socket_path)   # llama.cpp's server of ours: slots, templates
        self.base_url = base_url.rstrip("/") if base_url else "http://localhost"
        self.api_key = api_key
        self.remote_model = remote_model or name
        self.slots = [Slot(i) for i in range(max(1, slots))]
        self.n_ctx = n_ctx
        self.defaults = {**LLAMA_DEFAULTS, **(defaults or {})}
        self.slot_dir = slot_dir
        self.size_bytes = size_bytes
        self.template_tools = template_tools
        self.adapters = list(adapters or [])   # LoRA files loaded in the runner, by their id
        self.restores = 0

    def alive(self) -> bool:
        return self.process.alive() if self.process is not None else True

    # -- memory ------------------------------------------------------------------------------

    def memory_bytes(self) -> int:
        return self.size_bytes

    # -- slots (touched only on the event loop) ------------------------------------------------

    def take_slot(self, conversation: str) -> tuple[Slot, bool]:
        """A free slot for `conversation`, and whether its saved prefix should be restored."""
        free = [s for s in self.slots if not s.busy]
        if not free:   # the scheduler never sends more jobs than slots; be safe all the same
            free = list(self.slots)
        slot = next((s for s in free if conversation and s.conversation == conversation), None)
        restore = False
        if slot is None:
            # the slot least worth keeping: empty first, then the least recently used
            slot = min(free, key=lambda s: (bool(s.conversation), s.last_used))
            restore = bool(conversation and self.slot_dir
                           and os.path.exists(os.path.join(self.slot_dir, conversation_file(conversation))))
        slot.busy = True
        slot.conversation = conversation
        return slot, restore

    def give_back(self, slot: Slot, keep: bool = True) -> None:
        slot.busy = False
        slot.last_used = time.monotonic()
        if not keep:
            slot.conversation = ""

    # -- HTTP to the runner ----------------------------------------------------------------------

    def _session(self) -> aiohttp.ClientSession:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        connector = aiohttp.UnixConnector(path=self.socket_path) if self.local else None
        return aiohttp.ClientSession(connector=connector, headers=headers,
                                     timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))

    def url(self, path: str) -> str:
        """A remote engine's URL already ends in /v1, as OpenAI clients are given it."""
        if not self.local and path.startswith("/v1/"):
            path = path[3:]
        return self.base_url + path

    async def post(self, path: str, body: dict) -> dict:
        try:
            async with self._session() as session:
                async with session.post(self.url(path), json=body) as resp:
                    data = await resp.json(content_type=None)
                    if resp.status >= 400:
                        raise _runner_error(resp.status, data)
                    return data
        except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as e:
            raise RunnerGone(f"The chat runner for '{self.name}' is not answering: {e}") from e

    async def restore(self, slot: Slot) -> None:
        try:
            await self.post(f"/slots/{slot.id}?action=restore",
                            {"filename": conversation_file(slot.conversation)})
            self.restores += 1
        except (UserError, BackendFailed) as e:   # a stale or foreign file: read the prompt anew
            log.info("slot restore for %s skipped: %s", self.name, e)

    # -- prompts -------------------------------------------------------------------------------

    async def prompt_tokens(self, messages: list[dict], tools: list | None = None) -> int:
        """Tokens of the prompt the model's chat template really renders for these messages."""
        if not self.local:
            return sum(len(json.dumps(m)) for m in messages) // 3 + 8
        body: dict[str, Any] = {"messages": messages}
        if tools:
            body["tools"] = tools
        rendered = await self.post("/apply-template", body)
        tokens = await self.post("/tokenize", {"content": rendered.get("prompt", ""),
                                               "add_special": True, "parse_special": True})
        return len(tokens.get("tokens") or [])

    async def fit(self, messages: list[dict], max_tokens: int,
                  tools: list | None = None) -> tuple[list[dict], int, int, int]:
        """Drop the oldest turns (never a system message, never the last message) until the
        rendered prompt and the answer fit the context. (messages, dropped, prompt tokens,
        max_tokens that fit)."""
        kept = list(messages)
        dropped = 0
        max_tokens = max(1, min(max_tokens, self.n_ctx - ANSWER_ROOM_MIN))
        while True:
            count = await self.prompt_tokens(kept, tools)
            if count + max_tokens <= self.n_ctx:
                return kept, dropped, count, max_tokens
            droppable = [i for i, m in enumerate(kept[:-1]) if m.get("role") != "system"]
            if not droppable:
                room = self.n_ctx - count
                if room < ANSWER_ROOM_MIN:
                    raise PromptTooLong("The prompt", count, self.n_ctx - ANSWER_ROOM_MIN, "tokens")
                return kept, dropped, count, room
            del kept[droppable[0]]
            dropped += 1

    def sampling(self, job) -> dict:
        """The job's own sampling fields, the model's defaults for the rest."""
        out = {}
        for name in SAMPLING:
            value = getattr(job, name, None)
            out[name] = self.defaults[name] if value is None else value
        seed = job.seed if job.seed is not None else self.defaults.get("seed")
        if seed is not None:
            out["seed"] = seed
        return out

    # -- one generation ------------------------------------------------------------------------

    async def count_text(self, text: str) -> int:
        if not self.local:
            return len(text) // 3 + 1
        tokens = await self.post("/tokenize", {"content": text, "add_special": True})
        return len(tokens.get("tokens") or [])

    async def generate(self, payload: dict, slot: Slot | None,
                       on_delta: Callable[[dict, dict | None], None],
                       cancelled: Callable[[], bool], path: str = "/v1/chat/completions") -> StreamedChat:
        """Stream one chat completion; `on_delta(delta, logprobs)` for each chunk. Cancel closes
        the stream, and llama.cpp frees the slot at its next token."""
        body = dict(payload, stream=True, stream_options={"include_usage": True})
        if self.local:
            body.update(cache_prompt=True, id_slot=slot.id if slot else -1)
        else:
            body["model"] = self.remote_model
        out = StreamedChat()
        reader = asyncio.ensure_future(self._read_stream(path, body, out, on_delta, cancelled))
        try:
            while not reader.done():
                await asyncio.wait({reader}, timeout=0.05)
                if not reader.done() and cancelled():
                    reader.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await reader
                    out.finish_reason = "cancelled"
                    return out
            reader.result()
        finally:
            if not reader.done():
                reader.cancel()
        return out

    async def _read_stream(self, path: str, body: dict, out: StreamedChat,
                           on_delta: Callable[[dict, dict | None], None],
                           cancelled: Callable[[], bool]) -> None:
        """Read the stream into `out`; between tokens, a cancel ends it (the waiter in
        `generate` sees to a cancel while the prompt is read and nothing streams)."""
        parts: list[str] = []
        calls: dict[int, dict] = {}
        try:
            async with self._session() as session:
                async with session.post(self.url(path), json=body) as resp:
                    if resp.status >= 400:
                        raise _runner_error(resp.status, await resp.json(content_type=None))
                    async for chunk in _sse(resp.content):
                        if chunk.get("error"):
                            raise _runner_error(500, chunk)
                        usage = chunk.get("usage")
                        if usage:
                            out.prompt_tokens = usage.get("prompt_tokens", out.prompt_tokens)
                            out.completion_tokens = usage.get("completion_tokens", out.completion_tokens)
                        for choice in chunk.get("choices") or []:
                            delta = choice.get("delta") or (
                                {"content": choice["text"]} if choice.get("text") else {})
                            logprobs = choice.get("logprobs")
                            if delta.get("content"):
                                parts.append(delta["content"])
                            for call in delta.get("tool_calls") or []:
                                _merge_call(calls, call)
                            if logprobs and isinstance(logprobs.get("content"), list):
                                out.logprobs.extend(logprobs["content"])
                            if delta or logprobs:
                                on_delta(delta, logprobs)
                            if choice.get("finish_reason"):
                                out.finish_reason = choice["finish_reason"]
                        if cancelled():
                            out.finish_reason = "cancelled"
                            break
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError) as e:
            raise RunnerGone(f"The chat runner for '{self.name}' stopped answering: {e}") from e
        out.text = "".join(parts)
        out.tool_calls = [calls[i] for i in sorted(calls)]

    # -- stopping -----------------------------------------------------------------------------

    def save_slots(self) -> int:
        """Save each slot that holds a conversation (blocking: the manager's unload thread)."""
        if not (self.local and self.slot_dir and self.alive()):
            return 0
        saved = 0
        for slot in self.slots:
            if not slot.conversation:
                continue
            try:
                status, _ = unix_request(self.socket_path, "POST",
                                         f"/slots/{slot.id}?action=save",
                                         {"filename": conversation_file(slot.conversation)}, timeout=30)
                saved += status == 200
            except OSError as e:
                log.warning("saving slot %d of %s failed: %s", slot.id, self.name, e)
        _prune(Path(self.slot_dir), SLOT_FILES_MAX)
        return saved

    def close(self) -> None:
        try:
            self.save_slots()
        finally:
            if self.process is not None:
                self.process.stop()


def _prune(folder: Path, keep: int) -> None:
    files = sorted(folder.glob("*.bin"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in files[keep:]:
        with contextlib.suppress(OSError):
            old.unlink()


def _merge_call(calls: dict[int, dict], call: dict) -> None:
    index = call.get("index", len(calls))
    merged = calls.setdefault(index, {"id": "", "type": "function",
                                      "function": {"name": "", "arguments": ""}})
    if call.get("id"):
        merged["id"] = call["id"]
    fn = call.get("function") or {}
    if fn.get("name"):
        merged["function"]["name"] = fn["name"]
    merged["function"]["arguments"] += fn.get("arguments") or ""


async def _sse(content: aiohttp.StreamReader) -> AsyncIterator[dict]:
    async for raw in content:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            return
        try:
            yield json.loads(data)
        except ValueError:
            continue


def _runner_error(status: int, data: Any) -> Exception:
    error = data.get("error") if isinstance(data, dict) else None
    message = (error.get("message") if isinstance(error, dict) else str(error or data))[:500]
    if 400 <= status < 500:
        return UserError(f"The chat model refused the request: {message}")
    return BackendFailed(f"The chat runner failed: {message}")
