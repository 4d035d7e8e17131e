"""LoRA adapters on the chat runner (issue 17), with the offline SmolLM2 and adapters made here
the size a real one has (rank 16 on attn_q/k/v/output of all 30 layers, f16, 3.5 MiB each, as
convert_lora_to_gguf.py writes them):

  - decode tokens/s of a request for an adapter ÷ one for the base: pairs run one after the
    other, the median of 5 pairs' ratios (a shared machine's load shifts both of a pair alike);
  - memory of the base's runner with three adapters loaded ÷ the base alone: the runner
    process's RSS after a request for each, and what the memory budget counts for it
    (goal ≤ 1.1).

Confab's engine in process, default settings (a fresh data folder).
"""
from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from engine.jobs import ChatJob, ChatMessage, Token
from engine.runtime.engine import Engine
from models import gguf_meta
from tests.conftest import CHAT_MODEL, make_settings

TOKENS = 96
ROUNDS = 5
TARGETS = ("attn_q", "attn_k", "attn_v", "attn_output")
MESSAGES = [ChatMessage("system", "You are a helpful assistant."),
            ChatMessage("user", "Write a long story about a dragon who learns to sail.")]


def realistic_lora(path: Path, base_gguf: str, seed: int, rank: int = 16) -> Path:
    import gguf
    meta = gguf_meta.read_metadata(base_gguf)
    base = gguf_meta.read_tensors(base_gguf)
    arch = meta["general.architecture"]
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(rank))
    for n in range(int(meta[f"{arch}.block_count"])):
        for target in TARGETS:
            name = f"blk.{n}.{target}.weight"
            n_in, n_out = base[name][0][:2]
            writer.add_tensor(f"{name}.lora_a", (rng.standard_normal((rank, n_in)) * 0.02).astype(np.float16))
            writer.add_tensor(f"{name}.lora_b", (rng.standard_normal((n_out, rank)) * 0.02).astype(np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


async def decode_rate(engine: Engine, model: str) -> float:
    """Streamed tokens per second after the first token (the decode rate)."""
    handle = await engine.submit(ChatJob(model=model, messages=list(MESSAGES), max_tokens=TOKENS,
                                         temperature=0.0))
    first = None
    async for event in handle:
        if isinstance(event, Token) and event.text and first is None:
            first = time.perf_counter()
    result = await handle.result()
    return (result.usage.completion_tokens - 1) / max(1e-6, time.perf_counter() - first)


async def measure(folder: Path, adapters: int) -> tuple[int, int, list[float], list[float]]:
    """(runner RSS, bytes the budget counts, base rates, adapter rates)."""
    engine = Engine(make_settings(folder), gpu_total=None)
    base_path = engine.registry.get(CHAT_MODEL).path
    for i in range(adapters):
        engine.registry.add(realistic_lora(folder / f"style-{i}.gguf", base_path, seed=i),
                            kind="lora", base=CHAT_MODEL, name=f"style-{i}")
    engine.refresh_models()
    await engine.start(resume=False)
    try:
        base_rates, adapter_rates = [], []
        await decode_rate(engine, CHAT_MODEL)   # warm: load, first prompt
        for round_ in range(ROUNDS if adapters else 1):
            base_rates.append(await decode_rate(engine, CHAT_MODEL))
            if adapters:
                adapter_rates.append(await decode_rate(engine, f"style-{round_ % adapters}"))
        for i in range(adapters):   # every adapter used at least once before measuring
            await decode_rate(engine, f"style-{i}")
        runner = engine.models.instance_of(CHAT_MODEL)
        counted = {r.name: r.size for r in engine.models.snapshot()}[CHAT_MODEL]
        return runner.process.rss_bytes(), counted, base_rates, adapter_rates, \
            sum(m.size for m in engine.adapters_of(CHAT_MODEL))
    finally:
        await engine.close()


async def _run() -> list[tuple[str, object, str]]:
    with tempfile.TemporaryDirectory(prefix="confab-bench-lora-") as tmp:
        alone = await measure(Path(tmp) / "alone", 0)
        three = await measure(Path(tmp) / "three", 3)
    ratio = statistics.median(a / b for a, b in zip(three[3], three[2]))
    return [
        ("lora: adapter ÷ base decode tokens/s", ratio,
         f"median of {ROUNDS} pairs ({statistics.median(three[3]):.0f} vs {statistics.median(three[2]):.0f} "
         f"tokens/s), {TOKENS} tokens, one request at a time"),
        ("lora: runner RSS, 3 adapters ÷ base alone (goal ≤ 1.1)", three[0] / alone[0],
         f"{three[0] / 2**20:.0f} vs {alone[0] / 2**20:.0f} MiB; the 3 files: {three[4] / 2**20:.1f} MiB"),
        ("lora: budget counted, 3 adapters ÷ base alone", three[1] / alone[1],
         f"{three[1] / 2**20:.0f} vs {alone[1] / 2**20:.0f} MiB (weights + KV x slots + adapters)"),
    ]


def run() -> list[tuple[str, object, str]]:
    return asyncio.run(_run())


if __name__ == "__main__":
    for row in run():
        print(*row, sep="\t")
