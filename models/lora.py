"""LoRA adapters: what a file is and whether it fits a base model, judged from headers alone
(nothing is loaded, no library is needed).

A chat adapter is a GGUF of `general.type` "adapter" and `adapter.type` "lora", as llama.cpp's
`convert_lora_to_gguf.py` writes it: for each changed weight `W` (ggml shape `[in, out]`) a pair
`W.lora_a` `[in, r]` and `W.lora_b` `[r, out]`. An image adapter is a safetensors file (or a
folder holding one) as diffusers' `save_lora_weights` or PEFT write it: `unet.<module>.lora_A.weight`
`(r, in, ...)` and `.lora_B.weight` `(out, r, ...)`; kohya's `lora_unet_<module_with_underscores>
.lora_down/.lora_up` names are matched too. The checks are llama.cpp's and diffusers' own load
checks, made before a runner or a pipeline ever sees the file.
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from models import gguf_meta


class AdapterError(ValueError):
    """The file is not a usable adapter for that base; the message says why."""


@dataclass(frozen=True)
class AdapterInfo:
    kind: str          # chat | image: the kind of model it adapts
    fmt: str           # gguf-lora | diffusers-lora
    rank: int
    alpha: float       # 0 when the file does not say
    layers: int        # weights it changes
    path: str          # the file itself (a folder's one safetensors file)


def sniff(path: str | Path) -> str | None:
    """'chat' or 'image' when the file (or folder) looks like an adapter, else None."""
    p = Path(path)
    try:
        if p.is_file() and p.suffix != ".safetensors":
            meta = gguf_meta.read_metadata(str(p))
            return "chat" if meta.get("general.type") == "adapter" else None
        file = _safetensors_file(p)
        return "image" if any(_lora_part(k) for k in _safetensors_header(file)) else None
    except (OSError, ValueError, AdapterError):
        return None


def check_file(path: str | Path) -> None:
    """Raise AdapterError when the file itself is damaged (cut short, unreadable header)."""
    p = Path(path)
    if p.is_file() and p.suffix != ".safetensors":
        try:
            gguf_meta.read_tensors(str(p))
        except (OSError, gguf_meta.GGUFError) as e:
            raise AdapterError(f"{p.name} is damaged: {e}.") from None
    else:
        _safetensors_header(_safetensors_file(p))


# -- chat: GGUF adapters -------------------------------------------------------------------------

def inspect_gguf(path: str | Path, base_gguf: str | Path) -> AdapterInfo:
    path, base_gguf = str(path), str(base_gguf)
    try:
        meta = gguf_meta.read_metadata(path)
        tensors = gguf_meta.read_tensors(path)
    except (OSError, gguf_meta.GGUFError) as e:
        raise AdapterError(f"{Path(path).name} cannot be read as a GGUF adapter: {e}") from None
    if meta.get("general.type") != "adapter":
        raise AdapterError(f"{Path(path).name} is a GGUF model, not an adapter (its general.type "
                           f"is '{meta.get('general.type', 'model')}'); add it as a model of its own.")
    if meta.get("adapter.type") != "lora":
        raise AdapterError(f"{Path(path).name} is a '{meta.get('adapter.type')}' adapter; "
                           "Confab serves LoRA adapters.")
    base_meta = gguf_meta.read_metadata(base_gguf)
    arch, base_arch = meta.get("general.architecture"), base_meta.get("general.architecture")
    if arch != base_arch:
        raise AdapterError(f"{Path(path).name} adapts a '{arch}' model, but the base is a "
                           f"'{base_arch}' model.")
    base = gguf_meta.read_tensors(base_gguf)
    pairs: dict[str, dict[str, tuple[int, ...]]] = {}
    for name, (shape, _) in tensors.items():
        for part in ("lora_a", "lora_b"):
            if name.endswith("." + part):
                pairs.setdefault(name[: -len(part) - 1], {})[part] = shape
                break
        else:   # mergekit keeps norms beside the pairs: they replace the base's own
            if name not in base or base[name][0] != shape:
                raise AdapterError(f"{Path(path).name} has a tensor '{name}' that does not match "
                                   "the base model.")
    if not pairs:
        raise AdapterError(f"{Path(path).name} holds no LoRA tensors (name.lora_a / name.lora_b).")
    ranks = set()
    for name, ab in sorted(pairs.items()):
        if len(ab) != 2:
            raise AdapterError(f"{Path(path).name}: '{name}' has only its {next(iter(ab))} half.")
        if name not in base:
            raise AdapterError(f"{Path(path).name} changes '{name}', which the base model does not "
                               "have: it was made for another model.")
        w, a, b = base[name][0], ab["lora_a"], ab["lora_b"]
        if len(w) < 2 or len(a) != 2 or len(b) != 2:
            raise AdapterError(f"{Path(path).name}: '{name}' is not a matrix LoRA can change.")
        if name == "token_embd.weight":     # llama.cpp keeps this pair flipped (llm_build_inp_embd)
            ok = w[0] == b[1] and w[1] == a[1]
        else:
            ok = w[0] == a[0] and w[1] == b[1] and a[1] == b[0]
        if not ok:
            raise AdapterError(f"{Path(path).name}: '{name}' has shapes {list(a)} and {list(b)}, "
                               f"which do not fit the base's {list(w)}: it was made for another "
                               "model (or another size of it).")
        ranks.add(a[1] if name != "token_embd.weight" else a[0])
    alpha = meta.get("adapter.lora.alpha") or 0.0
    return AdapterInfo("chat", "gguf-lora", max(ranks), float(alpha), len(pairs), path)


# -- images: diffusers / PEFT safetensors ----------------------------------------------------------

def _safetensors_file(path: Path) -> Path:
    if path.is_file():
        return path
    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
        if len(files) == 1:
            return files[0]
        raise AdapterError(f"{path} should hold one .safetensors file (it holds {len(files)}).")
    raise AdapterError(f"{path} does not exist.")


def _safetensors_header(path: Path) -> dict[str, dict]:
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise AdapterError(f"{path.name} is empty or cut short.")
        n = struct.unpack("<Q", raw)[0]
        if n > min(size - 8, 100 * 2**20):
            raise AdapterError(f"{path.name} is not a safetensors file (or it is cut short).")
        try:
            header = json.loads(f.read(n))
        except ValueError:
            raise AdapterError(f"{path.name} is not a safetensors file: its header is not JSON.") from None
    if not isinstance(header, dict):
        raise AdapterError(f"{path.name} is not a safetensors file.")
    header.pop("__metadata__", None)
    end = max((t.get("data_offsets", [0, 0])[1] for t in header.values() if isinstance(t, dict)), default=0)
    if 8 + n + end > size:
        raise AdapterError(f"{path.name} is cut short: its tensors need {8 + n + end} bytes, it has {size}.")
    return header


_PARTS = ((".lora_A.weight", "a"), (".lora_B.weight", "b"), (".lora.down.weight", "a"),
          (".lora.up.weight", "b"), (".lora_down.weight", "a"), (".lora_up.weight", "b"))
_COMPONENTS = {"unet": "unet", "text_encoder": "text_encoder", "text_encoder_2": "text_encoder_2",
               "transformer": "transformer", "lora_unet": "unet", "lora_te": "text_encoder",
               "lora_te1": "text_encoder", "lora_te2": "text_encoder_2"}


def _lora_part(key: str) -> tuple[str, str] | None:
    for suffix, part in _PARTS:
        if key.endswith(suffix):
            return key[: -len(suffix)], part
    return None


def _base_shapes(folder: Path, component: str) -> dict[str, tuple[int, ...]]:
    files = sorted((folder / component).glob("*.safetensors"))
    shapes: dict[str, tuple[int, ...]] = {}
    for f in files:
        for k, v in _safetensors_header(f).items():
            shapes[k] = tuple(v.get("shape", ()))
    return shapes


def _split(module: str) -> tuple[str, str]:
    """(component, module path inside it) of a LoRA module name, for either naming."""
    if "." in module:
        head, rest = module.split(".", 1)
        if head in _COMPONENTS:
            return _COMPONENTS[head], rest
    for prefix in sorted(_COMPONENTS, key=len, reverse=True):
        if prefix.startswith("lora_") and module.startswith(prefix + "_"):
            return _COMPONENTS[prefix], module[len(prefix) + 1:]
    return "unet", module


def inspect_safetensors(path: str | Path, base_folder: str | Path) -> AdapterInfo:
    file = _safetensors_file(Path(path))
    header = _safetensors_header(file)
    base_folder = Path(base_folder)
    modules: dict[str, dict[str, tuple[int, ...]]] = {}
    for key, t in header.items():
        found = _lora_part(key)
        if found and isinstance(t, dict):
            modules.setdefault(found[0], {})[found[1]] = tuple(t.get("shape", ()))
    if not modules:
        raise AdapterError(f"{file.name} holds no LoRA weights (name.lora_A.weight / "
                           "name.lora_B.weight, as diffusers' save_lora_weights writes them).")
    bases: dict[str, dict[str, tuple[int, ...]]] = {}
    ranks = set()
    for module, ab in sorted(modules.items()):
        component, inner = _split(module)
        if component not in bases:
            bases[component] = _base_shapes(base_folder, component)
            # kohya writes module paths with underscores for dots: index the base both ways
            bases[component].update({k[: -len(".weight")].replace(".", "_") + ".weight": v
                                     for k, v in list(bases[component].items()) if k.endswith(".weight")})
        w = bases[component].get(inner + ".weight")
        if w is None:
            raise AdapterError(f"{file.name} changes '{module}', which the base pipeline does not "
                               "have: it was made for another model.")
        if len(ab) != 2:
            raise AdapterError(f"{file.name}: '{module}' has only one of its two LoRA matrices.")
        a, b = ab["a"], ab["b"]
        if len(a) < 2 or len(b) < 2 or a[1] != w[1] or b[0] != w[0] or a[0] != b[1]:
            raise AdapterError(f"{file.name}: '{module}' has shapes {list(a)} and {list(b)}, which "
                               f"do not fit the base's {list(w)}: it was made for another model.")
        ranks.add(a[0])
    return AdapterInfo("image", "diffusers-lora", max(ranks), 0.0, len(modules), str(file))
