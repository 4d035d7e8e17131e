"""Text to image on diffusers: a pipeline folder loaded with `from_pretrained`, fp16 on CUDA,
memory-saving settings chosen from the room the memory manager's budget leaves (and, on CUDA,
no more than the free VRAM), seeds, step progress and cancel.

`plan_memory` is the decision (a pure function); `DiffusersImage` carries it out. torch and
diffusers are imported when a pipeline loads, with an error that says what to install.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

GiB = 2**30
MiB = 2**20
WEIGHT_SUFFIXES = (".safetensors", ".bin")
MAX_ADAPTERS = 4            # LoRA adapters kept loaded in one pipeline (least recently used go)


@dataclass(frozen=True)
class Adapter:
    """A LoRA to apply to one generation: its model name, file and weight."""
    name: str
    path: str
    weight: float = 1.0


def _libs():
    try:
        import diffusers
        import torch
    except ImportError as e:
        raise ImportError("diffusers and torch are not installed: pip install 'confab-bot[images]'") from e
    return torch, diffusers


# -- the memory plan ----------------------------------------------------------------------------

@dataclass(frozen=True)
class MemoryPlan:
    dtype: str                  # float16 on CUDA, float32 on the CPU
    attention_slicing: bool
    vae_tiling: bool
    offload: str                # none | model (whole components) | sequential (layer by layer)
    reason: str


def activation_bytes(pixels: int) -> int:
    """Rough peak of activations for one image of `pixels` in fp16 with full attention."""
    return max(512 * MiB, int(2.5 * GiB * pixels / (1024 * 1024)))


def plan_memory(device: str, weights_bytes: int, largest_bytes: int, room_bytes: int | None,
                pixels: int = 1024 * 1024) -> MemoryPlan:
    """How to run a pipeline of `weights_bytes` (fp16) whose largest component is
    `largest_bytes`, for images up to `pixels`, in `room_bytes`: what the memory manager's
    budget leaves on the device for it (None: no budget known).

    On the CPU: float32 (fp16 is slow or unsupported there), so twice the bytes; attention
    slicing and VAE tiling when that does not fit the room (or above a megapixel, VAE tiling);
    offloading has nowhere to go. On CUDA, the cheapest setting that fits, in order: everything
    resident; attention slicing and VAE tiling; whole components moved to the GPU in turn
    (model offload); layer-by-layer offload (slowest, needs least).
    """
    act = activation_bytes(pixels)
    sliced = int(act * 0.4)
    gib = lambda b: f"{b / GiB:.1f} GiB"  # noqa: E731
    if device != "cuda":
        need = 2 * (weights_bytes + act)
        if room_bytes is None or need <= room_bytes:
            return MemoryPlan("float32", False, pixels > 1024 * 1024, "none", "CPU")
        return MemoryPlan("float32", True, True, "none",
                          f"CPU: {gib(need)} exceeds the {gib(room_bytes)} left in the budget: "
                          "attention slicing and VAE tiling")
    room = room_bytes if room_bytes is not None else weights_bytes + act
    if weights_bytes + act <= room:
        return MemoryPlan("float16", False, False, "none",
                          f"{gib(weights_bytes)} of weights and {gib(act)} of activations fit in {gib(room)}")
    if weights_bytes + sliced <= room:
        return MemoryPlan("float16", True, True, "none",
                          f"weights fit in {gib(room)} with attention slicing and VAE tiling")
    if largest_bytes + sliced <= room:
        return MemoryPlan("float16", True, True, "model",
                          f"{gib(weights_bytes)} of weights exceed {gib(room)}: components take turns on the GPU")
    return MemoryPlan("float16", True, True, "sequential",
                      f"even the largest component ({gib(largest_bytes)}) exceeds {gib(room)}: layer-by-layer offload")


def weight_sizes(folder: str | Path) -> tuple[int, int, bool]:
    """(total fp16 bytes, largest component's fp16 bytes, has an fp16 variant) of a pipeline
    folder, from its files: fp32 weights count half, as they load in fp16 on CUDA."""
    root = Path(folder)
    per_component: dict[str, int] = {}
    has_fp16 = any(".fp16." in p.name for p in root.rglob("*") if p.suffix in WEIGHT_SUFFIXES)
    for p in root.rglob("*"):
        if not p.is_file() or p.suffix not in WEIGHT_SUFFIXES:
            continue
        if has_fp16 and ".fp16." not in p.name and any(
                q.name.startswith(p.name.split(".")[0] + ".fp16.") for q in p.parent.iterdir()):
            continue   # an fp32 file beside its fp16 variant: the variant is what loads
        size = p.stat().st_size if ".fp16." in p.name else p.stat().st_size // 2
        component = p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else "root"
        per_component[component] = per_component.get(component, 0) + size
    total = sum(per_component.values())
    return total, max(per_component.values(), default=0), has_fp16


# -- generating -------------------------------------------------------------------------------

@dataclass
class GenerationRequest:
    prompt: str
    negative_prompt: str = ""
    n: int = 1
    width: int = 0              # 0: the model's default
    height: int = 0
    steps: int = 0              # 0: the model's default
    guidance: float | None = None
    seed: int = 0               # image i uses seed + i


@dataclass
class GenerationOutput:
    images: list                # PIL images
    seeds: list[int]
    nsfw: list[bool]
    steps: int
    guidance: float
    width: int
    height: int
    cancelled: bool = False


@dataclass
class Defaults:
    steps: int = 20
    guidance: float = 7.5
    size: int = 0               # 0: the pipeline's native size


class DiffusersImage:
    """One loaded diffusers pipeline. One generation at a time (the lock guards the pipeline)."""

    def __init__(self, path: str, device: str = "cpu", defaults: Defaults | None = None,
                 room: int | None = None, max_pixels: int = 1024 * 1024, threads: int = 0,
                 adapter_idle_s: float = 300.0):
        torch, diffusers = _libs()
        self.path, self.device = path, device
        self.defaults = defaults or Defaults()
        self._lock = threading.Lock()
        self._loras: dict[str, tuple[str, float]] = {}   # adapter key -> (file, last used); under _lock
        self.adapter_idle_s = adapter_idle_s
        self._torch = torch
        if threads and device == "cpu":
            torch.set_num_threads(threads)
        weights, largest, has_fp16 = weight_sizes(path)
        if device == "cuda":   # the budget's room, but never more than the card has free
            free = torch.cuda.mem_get_info()[0]
            room = free if room is None else min(room, free)
        self.plan = plan_memory(device, weights, largest, room, max_pixels)
        dtype = getattr(torch, self.plan.dtype)
        from diffusers.pipelines import pipeline_utils
        dtype_key = "dtype" if hasattr(pipeline_utils, "_resolve_dtype") else "torch_dtype"
        kwargs = {dtype_key: dtype, "local_files_only": True}
        if has_fp16 and self.plan.dtype == "float16":
            kwargs["variant"] = "fp16"
        diffusers.utils.logging.disable_progress_bar()     # a server: no bars in the log
        try:
            import transformers
            transformers.utils.logging.disable_progress_bar()
        except ImportError:
            pass
        before = torch.cuda.memory_allocated() if device == "cuda" else 0
        self.pipe = diffusers.DiffusionPipeline.from_pretrained(path, **kwargs)
        self.pipe.set_progress_bar_config(disable=True)
        if self.plan.offload == "model":
            self.pipe.enable_model_cpu_offload()
        elif self.plan.offload == "sequential":
            self.pipe.enable_sequential_cpu_offload()
        else:
            self.pipe.to(device)
        if self.plan.attention_slicing:
            self.pipe.enable_attention_slicing()
        if self.plan.vae_tiling and hasattr(self.pipe, "vae") and hasattr(self.pipe.vae, "enable_tiling"):
            self.pipe.vae.enable_tiling()
        self._bytes = (torch.cuda.memory_allocated() - before if device == "cuda"
                       else sum(p.numel() * p.element_size() for m in self._modules() for p in m.parameters()))
        log.info("diffusers pipeline %s on %s: %s", Path(path).name, device, self.plan.reason)

    def _modules(self):
        torch = self._torch
        return [c for c in self.pipe.components.values() if isinstance(c, torch.nn.Module)]

    def memory_bytes(self) -> int:
        return int(self._bytes)

    @property
    def native_size(self) -> int:
        unet = getattr(self.pipe, "unet", None) or getattr(self.pipe, "transformer", None)
        sample = getattr(getattr(unet, "config", None), "sample_size", None) or 64
        scale = getattr(self.pipe, "vae_scale_factor", 8)
        return int(sample) * int(scale)

    def resolve(self, req: GenerationRequest, max_side: int) -> GenerationRequest:
        """Fill the model's defaults into a request (the caller checked the explicit values)."""
        size = self.defaults.size or min(max(self.native_size, 64), max_side)
        return GenerationRequest(
            req.prompt, req.negative_prompt, req.n, req.width or size, req.height or size,
            req.steps or self.defaults.steps,
            self.defaults.guidance if req.guidance is None else req.guidance, req.seed)

    # -- LoRA adapters (called with _lock held) --------------------------------------------------

    @property
    def loaded_adapters(self) -> list[str]:
        return list(self._loras)

    def _use_adapter(self, adapter: Adapter | None) -> None:
        """Apply `adapter` alone (loading it into the pipeline the first time), or none. Adapters
        unused for `adapter_idle_s`, and the least recently used past MAX_ADAPTERS, are unloaded."""
        now = time.monotonic()
        key = re.sub(r"\W", "_", adapter.name) if adapter else ""
        stale = [k for k, (_, used) in self._loras.items()
                 if k != key and now - used > self.adapter_idle_s]
        if adapter is not None and key not in self._loras and len(self._loras) >= MAX_ADAPTERS:
            stale.append(min((k for k in self._loras if k not in stale),
                             key=lambda k: self._loras[k][1], default=None))
        stale = [k for k in stale if k]
        if stale:
            self.pipe.delete_adapters(stale)
            for k in stale:
                self._loras.pop(k, None)
        if adapter is None:
            if self._loras:
                self.pipe.disable_lora()
            return
        if key in self._loras and self._loras[key][0] != adapter.path:   # re-added from another file
            self.pipe.delete_adapters([key])
            del self._loras[key]
        if key not in self._loras:
            file = Path(adapter.path)
            self.pipe.load_lora_weights(str(file.parent), weight_name=file.name, adapter_name=key)
            log.info("LoRA %s loaded into %s", adapter.name, Path(self.path).name)
        self._loras[key] = (adapter.path, now)
        self.pipe.enable_lora()
        self.pipe.set_adapters([key], adapter_weights=[adapter.weight])

    def generate(self, req: GenerationRequest, on_step: Callable[[int, int], None],
                 cancelled: Callable[[], bool], adapter: Adapter | None = None) -> GenerationOutput:
        """Run the pipeline (with `adapter` applied, or none); `on_step(k, total)` after each
        step; stops between steps once `cancelled()` is true (the result then says `cancelled`)."""
        torch = self._torch
        seeds = [req.seed + i for i in range(req.n)]
        generators = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
        stopped = False

        def step_end(pipe, step: int, timestep, tensors: dict) -> dict:
            nonlocal stopped
            total = getattr(pipe, "num_timesteps", None) or req.steps
            on_step(step + 1, int(total))
            if cancelled():
                stopped = True
                pipe._interrupt = True      # diffusers skips the remaining steps
            return tensors

        kwargs = dict(prompt=req.prompt, num_inference_steps=req.steps, width=req.width,
                      height=req.height, guidance_scale=req.guidance, num_images_per_prompt=req.n,
                      generator=generators, callback_on_step_end=step_end)
        if req.negative_prompt and req.guidance > 1:
            kwargs["negative_prompt"] = req.negative_prompt
        with self._lock:
            if cancelled():
                return GenerationOutput([], seeds, [], req.steps, req.guidance, req.width,
                                        req.height, cancelled=True)
            self._use_adapter(adapter)
            with torch.inference_mode():
                out = self.pipe(**kwargs)
        images = list(out.images)
        nsfw = getattr(out, "nsfw_content_detected", None) or [False] * len(images)
        return GenerationOutput(images, seeds, [bool(x) for x in nsfw], req.steps, req.guidance,
                                req.width, req.height, cancelled=stopped)

    def close(self) -> None:
        torch = self._torch
        self.pipe = None
        if self.device == "cuda":
            torch.cuda.empty_cache()

