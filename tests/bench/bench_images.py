"""Images per second through Confab ÷ the same diffusers pipeline called directly (goal ≥ 0.97).

The tiny random-weight Stable Diffusion pipeline of the tests, at 128×128 and 4 steps, guidance
on (so the UNet sees a batch of two). Confab's side is the whole path a request takes: submit,
the store, the scheduler, the worker thread, step events, PNG encoding and the file write. The
direct side is `pipe(...)` on a pipeline loaded with `DiffusionPipeline.from_pretrained`. Runs
alternate, one of each per round, so both see the same machine load; medians are compared.

    python -m tests.bench.bench_images
"""
from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

ROUNDS = 8
SIZE, STEPS = 128, 4


def run() -> list[tuple[str, float, str]]:
    return asyncio.run(_run())


async def _run() -> list[tuple[str, float, str]]:
    import torch
    from diffusers import DiffusionPipeline

    from engine.config import Settings
    from engine.runtime.engine import Engine
    from engine.work.images import ImageJob, check_image_job
    from tests.models.tiny_diffusers import tiny_sd

    folder = tiny_sd()
    threads = 2
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as data:
        settings = Settings.from_env(env={}, dotenv=None, data_dir=data,
                                     models_dir=str(Path(data) / "models"), threads=threads)
        engine = Engine(settings, gpu_total=None)
        engine.registry.add(folder, name="tiny-sd")
        engine.refresh_models()
        await engine.start(resume=False)
        direct = DiffusionPipeline.from_pretrained(str(folder))
        direct.set_progress_bar_config(disable=True)

        def call_direct(seed: int):
            return direct(prompt="a lighthouse at dawn", num_inference_steps=STEPS, width=SIZE,
                          height=SIZE, guidance_scale=7.5,
                          generator=[torch.Generator().manual_seed(seed)]).images

        async def via_confab(seed: int):
            job = check_image_job(ImageJob(model="tiny-sd", prompt="a lighthouse at dawn",
                                           width=SIZE, height=SIZE, steps=STEPS, guidance=7.5,
                                           seed=seed), settings)
            handle = await engine.submit(job)
            return await asyncio.wait_for(handle.result(), 120)

        await via_confab(0)                     # load the model and warm both paths up
        await asyncio.to_thread(call_direct, 0)
        confab_s, direct_s, overhead_s = [], [], []
        try:
            for i in range(ROUNDS):
                t = time.perf_counter()
                result = await via_confab(i)
                confab_s.append(time.perf_counter() - t)
                overhead_s.append(confab_s[-1] - result.seconds)   # all but pipeline + PNG
                t = time.perf_counter()
                await asyncio.to_thread(call_direct, i)
                direct_s.append(time.perf_counter() - t)
        finally:
            await engine.close()
    c, d = statistics.median(confab_s), statistics.median(direct_s)
    note = f"tiny SD {SIZE}x{SIZE}, {STEPS} steps, CPU {threads} threads, median of {ROUNDS}"
    return [
        ("images: Confab images/s ÷ diffusers direct", round(d / c, 3), note + " (goal ≥ 0.97)"),
        ("images: Confab seconds per image", round(c, 4), note),
        ("images: diffusers direct seconds per image", round(d, 4), note),
        ("images: Confab overhead per job (s)", round(statistics.median(overhead_s), 4),
         "submit, store, scheduler, thread hand-off and events: wall time minus the executor's"),
    ]


if __name__ == "__main__":
    for name, value, note in run():
        print(f"{name:<48} {value:>8}  {note}")
