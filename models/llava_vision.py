"""Vision models for llama.cpp's server (its multimodal input, `mtmd`): a GGUF language model
and its projector (`mmproj`) GGUF in one folder.

`split_files` finds the pair; `handler_name` says which family a model is (from its options
or its file names); `build_messages` shapes the request, images as data URLs. All pure: the
runner loads and runs.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path

# The vision families Confab knows by their files. llama.cpp's server runs each with the chat
# template in its GGUF (or its own default where a file has none): its built-in non-Jinja
# templates (Vicuna's, for LLaVA 1.5) lose the image marker and fail to tokenize an image turn.
HANDLERS = frozenset({"llava-1.5", "llava-1.6", "bakllava", "obsidian", "moondream", "nanollava",
                      "llama3-vision-alpha", "minicpm-v-2.6", "qwen2.5-vl", "gemma-3", "smolvlm"})
# Patterns in file names (lower case, '_' and ' ' read as '-'), most specific first.
_NAME_HINTS: tuple[tuple[str, str], ...] = (
    ("llava-v1.6", "llava-1.6"), ("llava-1.6", "llava-1.6"), ("llava-next", "llava-1.6"),
    ("moondream", "moondream"), ("nanollava", "nanollava"), ("obsidian", "obsidian"),
    ("llama3-vision-alpha", "llama3-vision-alpha"), ("minicpm", "minicpm-v-2.6"),
    ("qwen2.5-vl", "qwen2.5-vl"), ("qwen2-5-vl", "qwen2.5-vl"), ("bakllava", "bakllava"),
    ("smolvlm", "smolvlm"), ("gemma-3", "gemma-3"),
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
