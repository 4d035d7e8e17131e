"""Memory benchmarks: what each in-process backend really holds, and whether the budget bounds
the process.

- Per backend, each in a fresh process: the resident memory (RSS) its library adds when
  imported, when its model is loaded, at its peak while used, and what stays after the model is
  unloaded, before and after Confab's release (gc, glibc's malloc_trim), over two
  load/use/unload cycles (a second cycle that ends higher than the first would be a leak).
- Peak RSS of Confab and its runner processes ÷ (idle RSS + budget) while chat, transcription,
  speech, embeddings and OCR are used in turn, three rounds, with CONFAB_CPU_BUDGET_MB=450
  (goal <= 1.10).

Run: `python -m tests.bench.bench_memory` (or `make bench BENCH=memory`);
`python -m tests.bench.bench_memory probe KIND` prints one backend's figures as JSON.
"""
from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
import threading
from pathlib import Path

from tests.scratch import scratch_dir

MiB = 2**20
BUDGET_MB = 450
ROUNDS = 3
KINDS = ("stt", "tts", "embedding", "ocr", "image", "bark")
SENTENCE = ("The meeting moved to Thursday afternoon, so please bring the budget numbers and "
            "the notes from the customer calls.")
TEXTS = [f"Passage {i}: the office opens at nine, and the kitchen has a real coffee machine."
         for i in range(64)]


def rss() -> int:
    from models.devices import process_rss_bytes
    return process_rss_bytes()


def reset_peak() -> None:
    """Start VmHWM (peak RSS) again from the current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


# -- one backend in this process -------------------------------------------------------------

def _model(kind: str, folder: Path):
    """(InstalledModel, a function that uses the loaded instance once)."""
    from models.registry import InstalledModel, Registry
    installed = Registry(folder / "data", folder / "models").installed()
    if kind == "stt":
        import numpy as np

        from engine.media import audio
        from models.whisper_stt import SttOptions
        from tests.speech_helpers import espeak
        wav = espeak(" ".join([SENTENCE] * 3), folder / "clip.wav")
        pcm = audio.decode(wav.read_bytes(), 50 * MiB, 120, 60, audio.STT_RATE, False, folder)
        samples = np.asarray(audio.to_float(pcm))
        return installed["whisper-base"], lambda m: list(m.transcribe(samples, SttOptions())[0])
    if kind == "tts":
        return installed["piper-joe"], lambda m: m.synthesize(" ".join([SENTENCE] * 3))
    if kind == "embedding":
        return installed["all-minilm-l6-v2"], lambda m: m.embed(TEXTS)
    if kind == "ocr":
        from tests.models.tiny_diffusers import text_png
        png = text_png(["Invoice 4711, due on 3 May", "Total: 129.00 EUR"])
        return installed["rapidocr-ppocrv4"], lambda m: m.read(png)
    if kind == "image":
        from models.diffusers_image import GenerationRequest
        from tests.models.tiny_diffusers import build_tiny_sd
        path = build_tiny_sd(folder / "tiny-sd")
        model = InstalledModel("tiny-sd", "image", "diffusers", str(path), 64 * MiB)
        req = GenerationRequest("a red boat", "", 1, 128, 128, 4, 7.5, 1)
        return model, lambda m: m.generate(req, lambda k, n: None, lambda: False)
    if kind == "bark":
        from tests.speech_helpers import build_tiny_bark
        path = build_tiny_bark(folder / "tiny-bark")
        model = InstalledModel("tiny-bark", "tts", "bark", str(path), 64 * MiB)
        return model, lambda m: m.synthesize("hello there.")
    raise ValueError(kind)


LIBRARY_IMPORTS = {
    "stt": ("ctranslate2", "faster_whisper"),
    "tts": ("onnxruntime", "piper"),
    "ocr": ("onnxruntime", "rapidocr_onnxruntime"),
    "embedding": ("torch", "sentence_transformers"),
    "image": ("torch", "diffusers", "transformers"),
    "bark": ("torch", "transformers"),
}


def probe(kind: str) -> dict:
    """This process's RSS (MiB) around two load/use/unload cycles of one backend, on the CPU."""
    import importlib

    from engine.runtime.memory import release_freed_memory
    from engine.work import registry as backends
    from tests.conftest import make_settings
    backends.load_modalities()
    folder = scratch_dir("confab-memprobe-")
    model, use = _model(kind, folder)
    settings = make_settings(folder / "data", folder / "models")
    gc.collect()
    release_freed_memory()
    out = {"kind": kind, "model": model.name, "base": rss()}
    for name in LIBRARY_IMPORTS[kind]:
        importlib.import_module(name)
    gc.collect()
    out["imported"] = rss()
    for cycle in (1, 2):
        reset_peak()
        instance, measured = backends.load_measured(model, "cpu", settings, room=BUDGET_MB * MiB)
        out[f"loaded{cycle}"] = rss()
        out[f"counted{cycle}"] = measured or model.size
        reset_peak()
        for _ in range(3):
            use(instance)
        out[f"used_peak{cycle}"] = peak()
        out[f"used{cycle}"] = rss()
        close = getattr(instance, "close", None)
        if close:
            close()
        del instance
        out[f"closed{cycle}"] = rss()
        gc.collect()
        release_freed_memory()
        out[f"released{cycle}"] = rss()
    return {k: (round(v / MiB, 1) if isinstance(v, int) else v) for k, v in out.items()}


def probe_in_child(kind: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "tests.bench.bench_memory", "probe", kind],
                         capture_output=True, text=True, timeout=600,
                         cwd=Path(__file__).resolve().parents[2])
    if out.returncode:
        raise RuntimeError(f"probe {kind} failed: {out.stderr[-800:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def backend_rows(kinds=KINDS) -> list[tuple[str, float, str]]:
    rows = []
    for kind in kinds:
        p = probe_in_child(kind)
        lib = p["imported"] - p["base"]
        loaded = p["loaded1"] - p["imported"]
        use = p["used_peak1"] - p["imported"]
        kept = p["closed1"] - p["imported"]
        released = p["released1"] - p["imported"]
        second = p["released2"] - p["imported"]
        rows.append((f"{kind} ({p['model']}) MiB held after unload", round(lib + released, 1),
                     f"import {lib:.0f}; loaded +{loaded:.0f} (counted {p['counted1']:.0f}); "
                     f"peak in use +{use:.0f}; after close +{kept:.0f}, after release "
                     f"+{released:.0f}; after a second cycle +{second:.0f}"))
    return rows


# -- every kind in turn through the engine ------------------------------------------------------

class Sampler:
    """Peak of this process's RSS plus its runner processes' RSS, sampled every 10 ms."""

    def __init__(self, engine):
        self.engine, self.peak, self._stop = engine, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def runners_rss(self) -> int:
        total = 0
        for name in self.engine.models.resident_names():
            process = getattr(self.engine.models.instance_of(name), "process", None)
            total += process.rss_bytes() if process is not None else 0
        return total

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            try:
                self.peak = max(self.peak, rss() + self.runners_rss())
            except (RuntimeError, AttributeError):   # the resident set changed while read
                pass

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


async def _use(engine, kind: str, folder: Path) -> None:
    from engine.jobs import ChatJob, ChatMessage, Origin
    from engine.work.embeddings import embed
    from engine.work.speech import submit_speech, submit_transcription
    origin = Origin(platform="api", user="bench")
    if kind == "chat":
        handle = await engine.submit(ChatJob(
            model="smollm2-135m-instruct", origin=origin, max_tokens=48,
            messages=[ChatMessage("system", "You are a helpful assistant."),
                      ChatMessage("user", "What is the capital of France?")]))
        await asyncio.wait_for(handle.result(), 300)
    elif kind == "stt":
        wav = folder / "clip.wav"
        if not wav.exists():
            from tests.speech_helpers import espeak
            espeak(SENTENCE, wav)
        handle = await submit_transcription(engine, wav.read_bytes(), origin, model="whisper-base")
        await asyncio.wait_for(handle.result(), 300)
    elif kind == "tts":
        handle = await submit_speech(engine, SENTENCE, origin, model="piper-joe")
        await asyncio.wait_for(handle.result(), 300)
    elif kind == "embedding":
        await asyncio.wait_for(embed(engine, TEXTS, origin, model="all-minilm-l6-v2"), 300)
    elif kind == "ocr":
        from engine.media import imaging
        from engine.work.images import OcrJob
        from tests.models.tiny_diffusers import text_png
        png = text_png(["Invoice 4711, due on 3 May", "Total: 129.00 EUR"])
        path = imaging.save_upload(png, imaging.check_image(png, engine.settings), engine.settings)
        handle = await engine.submit(OcrJob(model="rapidocr-ppocrv4", origin=origin, images=[path]))
        await asyncio.wait_for(handle.result(), 300)
    else:
        raise ValueError(kind)


async def _cycle(kinds: list[str], rounds: int, budget_mb: int, overrides: dict) -> dict:
    from engine import Engine
    from engine.errors import ModelDoesNotFit
    from tests.conftest import make_settings
    folder = scratch_dir("confab-memcycle-")
    engine = Engine(make_settings(folder / "data", folder / "models", cpu_budget_mb=budget_mb,
                                  device="cpu", **overrides), gpu_total=None)
    await engine.start(resume=False)
    refused: list[str] = []
    counted_peak = 0
    try:
        await asyncio.sleep(0.5)
        gc.collect()
        idle = rss()
        with Sampler(engine) as sampler:
            for _ in range(rounds):
                for kind in kinds:
                    try:
                        await _use(engine, kind, folder)
                    except ModelDoesNotFit as e:
                        refused.append(f"{kind}: {e.message}")
                    counted_peak = max(counted_peak, engine.models.counted("cpu"))
            await asyncio.sleep(0.05)
        return {"idle": idle, "peak": sampler.peak, "budget": budget_mb * MiB,
                "counted_peak": counted_peak, "refused": refused,
                "loads": engine.models.loads, "evictions": engine.models.evictions}
    finally:
        await engine.close()


def cycle(kinds: list[str], rounds: int = ROUNDS, budget_mb: int = BUDGET_MB, **overrides) -> dict:
    """Every kind in turn, `rounds` times, in this process (see `cycle_in_child`)."""
    return asyncio.run(_cycle(kinds, rounds, budget_mb, overrides))


def cycle_in_child(kinds, rounds: int = ROUNDS, budget_mb: int = BUDGET_MB, **overrides) -> dict:
    """`cycle` in a fresh process, so that idle is Confab's idle and no library is imported yet."""
    args = json.dumps({"kinds": list(kinds), "rounds": rounds, "budget_mb": budget_mb,
                       "overrides": overrides})
    out = subprocess.run([sys.executable, "-m", "tests.bench.bench_memory", "cycle", args],
                         capture_output=True, text=True, timeout=1800,
                         cwd=Path(__file__).resolve().parents[2])
    if out.returncode:
        raise RuntimeError(f"the memory cycle failed: {out.stderr[-1500:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# Chat's runner sized for a 450 MiB budget: one slot of 4,096 tokens (SmolLM2: 90 MiB of KV
# cache) and a 32 MiB prompt cache; with the defaults (4 slots, 256 MiB) it needs 730 MiB.
CHAT_SMALL = {"chat_slots": 1, "prompt_cache_mb": 32}
CYCLE_KINDS = ["chat", "stt", "tts", "embedding", "ocr"]


def run(kinds: list[str] | None = None) -> list[tuple[str, float, str]]:
    rows = backend_rows(kinds or KINDS)
    r = cycle_in_child(CYCLE_KINDS, **CHAT_SMALL)
    ratio = r["peak"] / (r["idle"] + r["budget"])
    rows.append(("peak RSS (Confab + runners) / (idle + budget)", round(ratio, 3),
                 f"peak {r['peak'] / MiB:.0f} MiB, idle {r['idle'] / MiB:.0f}, budget "
                 f"{r['budget'] / MiB:.0f}, counted at most {r['counted_peak'] / MiB:.0f}; "
                 f"{ROUNDS} rounds of {', '.join(CYCLE_KINDS)}: {r['loads']} loads, "
                 f"{r['evictions']} evictions, {len(r['refused'])} refused"))
    for line in sorted(set(r["refused"])):
        rows.append(("refused", 0, line))
    return rows


def main(argv: list[str]) -> int:
    if argv[:1] == ["probe"]:
        print(json.dumps(probe(argv[1])))
        return 0
    if argv[:1] == ["cycle"]:
        a = json.loads(argv[1])
        print(json.dumps(cycle(a["kinds"], a["rounds"], a["budget_mb"], **a["overrides"])))
        return 0
    for row in run(argv[1:] if argv[:1] == ["backends"] else None):
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
