"""Chat on llama-cpp-python: GGUF weights, the chat template stored in the GGUF, streaming."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Callable

log = logging.getLogger(__name__)


def _llama_cpp():
    try:
        import llama_cpp
    except ImportError as e:
        raise ImportError("llama-cpp-python is not installed: pip install 'confab-bot[chat]'") from e
    return llama_cpp


@dataclass
class ChatRequest:
    messages: list[dict]
    max_tokens: int = 256
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    stop: list[str] = field(default_factory=list)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repeat_penalty: float = 1.0
    seed: int | None = None


@dataclass
class ChatOutput:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    trimmed_messages: int


class LlamaChat:
    """One loaded GGUF chat model. Not thread-safe: the engine runs one job on it at a time."""

    def __init__(self, path: str, n_ctx: int = 4096, n_threads: int | None = None,
                 n_gpu_layers: int = 0, n_batch: int = 512, verbose: bool = False):
        llama_cpp = _llama_cpp()
        self.path = path
        self._lock = threading.Lock()  # guards the llama context
        self.llm = llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_threads=n_threads,
                                   n_gpu_layers=n_gpu_layers, n_batch=n_batch, n_ubatch=n_batch,
                                   verbose=verbose)
        # llama.cpp pads the context (to a multiple of 256) and reports the padded size, but
        # llama-cpp-python sizes its token buffer to the size asked for: never go past that.
        self.n_ctx = min(self.llm.n_ctx(), n_ctx) if n_ctx > 0 else self.llm.n_ctx()

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8", "ignore"), add_bos=False, special=False))

    def fit_context(self, messages: list[dict], max_tokens: int) -> tuple[list[dict], int, int]:
        """Drop the oldest turns (never the system prompt, never the last message) until the
        prompt and the answer fit in the context. Returns (messages, dropped, prompt_tokens)."""
        per_message = 8  # role markers and separators of the chat template
        costs = [self.count_tokens(m.get("content") or "") + per_message for m in messages]
        budget = self.n_ctx - max_tokens
        keep = list(range(len(messages)))
        dropped = 0
        while sum(costs[i] for i in keep) > budget:
            droppable = [i for i in keep[:-1] if messages[i].get("role") != "system"]
            if not droppable:
                break
            keep.remove(droppable[0])
            dropped += 1
        return [messages[i] for i in keep], dropped, sum(costs[i] for i in keep)

    def chat(self, req: ChatRequest, on_token: Callable[[str], None],
             cancelled: Callable[[], bool]) -> ChatOutput:
        with self._lock:
            max_tokens = max(1, min(req.max_tokens, self.n_ctx - 16))
            messages, dropped, prompt_tokens = self.fit_context(req.messages, max_tokens)
            room = self.n_ctx - prompt_tokens
            if room < 16:
                raise ValueError(f"prompt of about {prompt_tokens} tokens leaves no room in a "
                                 f"context of {self.n_ctx} tokens")
            max_tokens = min(max_tokens, room)
            if req.seed is not None:
                self.llm.set_seed(req.seed)
            stream = self.llm.create_chat_completion(
                messages=messages, stream=True, max_tokens=max_tokens,
                temperature=req.temperature, top_p=req.top_p, top_k=req.top_k,
                stop=req.stop or None, presence_penalty=req.presence_penalty,
                frequency_penalty=req.frequency_penalty, repeat_penalty=req.repeat_penalty)
            parts: list[str] = []
            completion_tokens = 0
            finish = "stop"
            try:
                for chunk in stream:
                    choice = chunk["choices"][0]
                    text = choice["delta"].get("content") or ""
                    if text:
                        completion_tokens += 1
                        parts.append(text)
                        on_token(text)
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
                    if cancelled():
                        finish = "cancelled"
                        break
            finally:
                close = getattr(stream, "close", None)
                if close:
                    close()
            return ChatOutput("".join(parts), finish, prompt_tokens, completion_tokens, dropped)

    def close(self) -> None:
        with self._lock:  # never free the context under a generation still running on it
            close = getattr(self.llm, "close", None)
            if close:
                close()
