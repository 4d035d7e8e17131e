"""A GGUF file's metadata (its key-value header), read without loading the model.

Confab needs a few keys before a runner starts: the architecture's sizes (for the KV cache it
will take in the memory budget) and the model's own recommended sampling (`general.sampling.*`).
"""
from __future__ import annotations

import os
import struct
from functools import lru_cache
from typing import BinaryIO

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
            11: "<q", 12: "<d"}
STRING, ARRAY = 8, 9
MAX_ARRAY_KEEP = 64   # long arrays (the vocabulary) are skipped, not kept


class GGUFError(ValueError):
    pass


def _read(f: BinaryIO, fmt: str):
    size = struct.calcsize(fmt)
    raw = f.read(size)
    if len(raw) != size:
        raise GGUFError("the file ends inside its header")
    return struct.unpack(fmt, raw)[0]


def _string(f: BinaryIO) -> str:
    n = _read(f, "<Q")
    if n > 1 << 24:
        raise GGUFError("a string in the header is implausibly long")
    return f.read(n).decode("utf-8", "replace")


def _value(f: BinaryIO, vtype: int):
    if vtype in _SCALARS:
        return _read(f, _SCALARS[vtype])
    if vtype == STRING:
        return _string(f)
    if vtype == ARRAY:
        item_type, n = _read(f, "<I"), _read(f, "<Q")
        if item_type in _SCALARS and n > MAX_ARRAY_KEEP:
            f.seek(struct.calcsize(_SCALARS[item_type]) * n, 1)
            return None
        items = [_value(f, item_type) for _ in range(n)]
        return items if n <= MAX_ARRAY_KEEP else None
    raise GGUFError(f"unknown value type {vtype} in the header")


@lru_cache(maxsize=64)
def _cached(path: str, mtime: float, size: int) -> dict:
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise GGUFError(f"{path} is not a GGUF file")
        version = _read(f, "<I")
        if version < 2:
            raise GGUFError(f"GGUF version {version} is too old")
        _read(f, "<Q")                     # tensor count
        n_kv = _read(f, "<Q")
        out = {}
        for _ in range(n_kv):
            key = _string(f)
            out[key] = _value(f, _read(f, "<I"))
        return out


def read_metadata(path: str) -> dict:
    st = os.stat(path)
    return dict(_cached(path, st.st_mtime, st.st_size))


def kv_bytes_per_token(meta: dict, bytes_per_value: int = 2) -> int:
    """Bytes of K and V cache one token takes (f16 cache), from the architecture's sizes."""
    arch = meta.get("general.architecture", "")

    def get(key, default=0):
        v = meta.get(f"{arch}.{key}", default)
        return max(v) if isinstance(v, list) and v else v

    layers = int(get("block_count", 0))
    heads = int(get("attention.head_count", 0)) or 1
    kv_heads = int(get("attention.head_count_kv", heads)) or heads
    embd = int(get("embedding_length", 0))
    k_len = int(get("attention.key_length", 0)) or (embd // heads if heads else 0)
    v_len = int(get("attention.value_length", 0)) or k_len
    return layers * kv_heads * (k_len + v_len) * bytes_per_value


SAMPLING_KEYS = {"temp": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
                 "penalty_repeat": "repeat_penalty", "penalty_present": "presence_penalty",
                 "penalty_freq": "frequency_penalty"}


def sampling_defaults(meta: dict) -> dict:
    """The model's own recommended sampling, where its file carries `general.sampling.*`."""
    out = {}
    for key, name in SAMPLING_KEYS.items():
        value = meta.get(f"general.sampling.{key}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = int(value) if name == "top_k" else float(value)
    return out


# -- tensors ----------------------------------------------------------------------------------

# bytes per block and values per block of the ggml types adapters and small models use; other
# types are read (name and shape) without a size check
_TYPE_SIZES = {0: (4, 1), 1: (2, 1), 30: (2, 1), 8: (34, 32), 2: (18, 32), 3: (20, 32),
               12: (144, 256), 14: (210, 256)}


def read_tensors(path: str) -> dict[str, tuple[tuple[int, ...], int]]:
    """Each tensor's name -> (shape in ggml order: ne[0] first, ggml type), with the file
    checked to hold every tensor's bytes (a cut-short download fails here, not in a runner)."""
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise GGUFError(f"{path} is not a GGUF file")
        if _read(f, "<I") < 2:
            raise GGUFError("GGUF version too old")
        n_tensors, n_kv = _read(f, "<Q"), _read(f, "<Q")
        if n_tensors > 1 << 20:
            raise GGUFError("an implausible number of tensors")
        alignment = 32
        for _ in range(n_kv):
            key = _string(f)
            value = _value(f, _read(f, "<I"))
            if key == "general.alignment" and isinstance(value, int) and value > 0:
                alignment = value
        tensors, end = {}, 0
        for _ in range(n_tensors):
            name = _string(f)
            n_dims = _read(f, "<I")
            if n_dims > 8:
                raise GGUFError(f"tensor {name} has {n_dims} dimensions")
            shape = tuple(_read(f, "<Q") for _ in range(n_dims))
            ggml_type, offset = _read(f, "<I"), _read(f, "<Q")
            tensors[name] = (shape, ggml_type)
            if ggml_type in _TYPE_SIZES:
                block_bytes, block_values = _TYPE_SIZES[ggml_type]
                values = 1
                for d in shape:
                    values *= d
                end = max(end, offset + values // block_values * block_bytes)
        data_start = -(-f.tell() // alignment) * alignment
    if data_start + end > os.path.getsize(path):
        raise GGUFError(f"the file is cut short: its tensors need {data_start + end} bytes, "
                        f"it has {os.path.getsize(path)}")
    return tensors
