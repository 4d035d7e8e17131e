"""Image + text -> text on llama-cpp-python's multimodal chat handlers (LLaVA 1.5 and the other
models those handlers support): a GGUF language model and its projector (`mmproj`) GGUF.

`handler_name` picks the handler from the model's options or its file names and
`build_messages` shapes the request; both are pure. `LlavaVision` loads and runs.
"""
from __future__ import annotations

import base64
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .llama_chat import ChatOutput, ChatRequest

log = logging.getLogger(__name__)

# Handler class in llama_cpp.llama_chat_format, by the name a model's files or options carry.
HANDLERS: dict[str, str] = {
    "llava-1.5": "Llava15ChatHandler",
    "llava-1.6": "Llava16ChatHandler",
    "bakllava": "Llava15ChatHandler",
    "obsidian": "ObsidianChatHandler",
    "moondream": "MoondreamChatHandler",
    "nanollava": "NanoLlavaChatHandler",
    "llama3-vision-alpha": "Llama3VisionAlphaChatHandler",
    "minicpm-v-2.6": "MiniCPMv26ChatHandler",
    "qwen2.5-vl": "Qwen25VLChatHandler",
    "gemma-3": "Gemma4ChatHandler",
}
# Patterns in file names (lower case, '_' and ' ' read as '-'), most specific first.
_NAME_HINTS: tuple[tuple[str, str], ...] = (
    ("llava-v1.6", "llava-1.6"), ("llava-1.6", "llava-1.6"), ("llava-next", "llava-1.6"),
    ("moondream", "moondream"), ("nanollava", "nanollava"), ("obsidian", "obsidian"),
    ("llama3-vision-alpha", "llama3-vision-alpha"), ("minicpm", "minicpm-v-2.6"),
    ("qwen2.5-vl", "qwen2.5-vl"), ("qwen2-5-vl", "qwen2.5-vl"), ("bakllava", "bakllava"),
    ("llava", "llava-1.5"),
)
DEFAULT_HANDLER = "llava-1.5"


def handler_name(options: dict, files: list[str]) -> str:
    """Which handler runs this model: `options["handler"]` when set, else a hint in the file
    names, else LLaVA 1.5 (the layout `llava-gguf` folders have by default)."""
    chosen = options.get("handler")
    if chosen:
        if chosen not in HANDLERS:
            raise ValueError(f"Unknown vision handler '{chosen}'; Confab knows "
                             f"{', '.join(sorted(HANDLERS))}.")
        return chosen
    names = " ".join(Path(f).name.lower().replace("_", "-").replace(" ", "-") for f in files)
    for hint, name in _NAME_HINTS:
        if hint in names:
            return name
    return DEFAULT_HANDLER


def split_files(path: str | Path) -> tuple[str, str]:
    """(language model GGUF, projector GGUF) in a model folder; or, given the language model's
    file (`confab models add FILE --kind vision`), the projector beside it."""
    given = Path(path)
    folder = given.parent if given.is_file() else given
    ggufs = sorted(p for p in folder.iterdir() if p.suffix == ".gguf") if folder.is_dir() else []
    projectors = [p for p in ggufs if "mmproj" in p.name.lower() or "projector" in p.name.lower()]
    models = [given] if given.is_file() else [p for p in ggufs if p not in projectors]
    if len(projectors) != 1 or len(models) != 1:
        raise ValueError(f"{folder} must hold one language-model GGUF and one projector GGUF "
                         f"(its name containing 'mmproj'); found {[p.name for p in ggufs]}.")
    return str(models[0]), str(projectors[0])


@dataclass
class VisionTurn:
    role: str                                  # system, user, assistant
    text: str
    images: list[tuple[bytes, str]] = field(default_factory=list)   # (bytes, mime), PNG or JPEG


def build_messages(turns: list[VisionTurn]) -> list[dict]:
    """OpenAI-style messages for the handler: a user turn with images becomes a list of parts,
    the images first (as data URLs: the handler never fetches anything) and the text last."""
    out = []
    for t in turns:
        if t.images and t.role == "user":
            parts: list[dict] = [{"type": "image_url", "image_url": {
                "url": f"data:{mime};base64," + base64.b64encode(data).decode()}}
                for data, mime in t.images]
            parts.append({"type": "text", "text": t.text})
            out.append({"role": "user", "content": parts})
        else:
            out.append({"role": t.role, "content": t.text})
    return out


class LlavaVision:
    """One loaded vision model. One request at a time (the lock guards the llama context)."""

    def __init__(self, path: str, options: dict | None = None, n_ctx: int = 4096,
                 n_threads: int | None = None, n_gpu_layers: int = 0, verbose: bool = False):
        try:
            import llama_cpp
            from llama_cpp import llama_chat_format
        except ImportError as e:
            raise ImportError("llama-cpp-python is not installed: pip install 'confab-bot[chat]'") from e
        model_path, projector = split_files(path)
        self.handler = handler_name(options or {}, [model_path, projector])
        cls = getattr(llama_chat_format, HANDLERS[self.handler])
        self._lock = threading.Lock()
        self.llm = llama_cpp.Llama(model_path=model_path, n_ctx=max(n_ctx, 2048), n_threads=n_threads,
                                   n_gpu_layers=n_gpu_layers, verbose=verbose,
                                   chat_handler=cls(clip_model_path=projector, verbose=verbose))
        self.n_ctx = self.llm.n_ctx()

    def chat(self, turns: list[VisionTurn], req: ChatRequest, on_token: Callable[[str], None],
             cancelled: Callable[[], bool]) -> ChatOutput:
        with self._lock:
            if req.seed is not None:
                self.llm.set_seed(req.seed)
            stream = self.llm.create_chat_completion(
                messages=build_messages(turns), stream=True, max_tokens=req.max_tokens,
                temperature=req.temperature, top_p=req.top_p, top_k=req.top_k,
                stop=req.stop or None, repeat_penalty=req.repeat_penalty)
            parts: list[str] = []
            finish = "stop"
            try:
                for chunk in stream:
                    choice = chunk["choices"][0]
                    text = choice["delta"].get("content") or ""
                    if text:
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
            text = "".join(parts)
            prompt_tokens = sum(len(self.llm.tokenize(t.text.encode(), add_bos=False)) for t in turns)
            return ChatOutput(text, finish, prompt_tokens, len(parts), 0)

    def close(self) -> None:
        close = getattr(self.llm, "close", None)
        if close:
            close()
