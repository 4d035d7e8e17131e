"""Which models are resident where, within a budget per device.

`plan_placement` and `expired` are the decisions, as pure functions. `ModelManager` is the one
owner that loads and unloads: every load, unload and eviction goes through its lock, and the
keep-alive timer only asks it to unload.
"""
from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import gc
import logging
import os
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from engine.errors import ModelDoesNotFit

log = logging.getLogger(__name__)

MiB = 2**20


@dataclass(frozen=True)
class Resident:
    name: str
    device: str
    size: int
    last_used: float
    pinned: bool = False
    busy: bool = False
    library: str = ""       # the runtime it runs in, for RUNTIME_COSTS


@dataclass(frozen=True)
class RuntimeCost:
    """What a library holds beside its models' own sizes, on one device.

    `shared`: once while any of its models is resident there (its code and heap once imported,
    its allocator's caches, a CUDA context); `kept`: what stays after its last model is
    unloaded and everything freed was given back (an import cannot be undone); `each`: per
    model, for libraries that run each model in a process of its own (llama-server).
    """
    shared: int = 0
    kept: int = 0
    each: int = 0


# Measured on the CPU here with tests/bench/bench_memory.py (RSS, after Confab's release on
# unload). A model's own size counts its weights and its working memory at its peak in use.
# CUDA figures are what each runtime keeps on the card beyond its tensors: the CUDA context
# of the process (one for the in-process libraries together, one per runner process) and the
# caching allocators' ceilings; they are not measured here (no GPU).
RUNTIME_COSTS: dict[tuple[str, str], RuntimeCost] = {
    ("ctranslate2", "cpu"): RuntimeCost(shared=110 * MiB, kept=110 * MiB),
    ("onnxruntime", "cpu"): RuntimeCost(shared=80 * MiB, kept=80 * MiB),
    ("torch", "cpu"): RuntimeCost(shared=430 * MiB, kept=430 * MiB),
    ("llama-server", "cpu"): RuntimeCost(each=24 * MiB),
    ("cuda", "cuda"): RuntimeCost(shared=400 * MiB, kept=400 * MiB),
    ("ctranslate2", "cuda"): RuntimeCost(shared=200 * MiB),
    ("torch", "cuda"): RuntimeCost(shared=64 * MiB),
    ("llama-server", "cuda"): RuntimeCost(each=400 * MiB),
}
# Libraries whose CUDA use shares the process's one CUDA context (runners have their own).
IN_PROCESS_CUDA = frozenset({"ctranslate2", "onnxruntime", "torch"})


@dataclass(frozen=True)
class Placement:
    device: str
    evict: tuple[str, ...] = ()


def runtime_cost(device: str, resident: Iterable[Resident], imported: Iterable[tuple[str, str]] = (),
                 costs: dict[tuple[str, str], RuntimeCost] | None = None) -> int:
    """What the libraries hold on `device` beside the sizes of its resident models: each
    library with a model there once (`shared`, plus `each` per model), the CUDA context once
    for the in-process ones, and what each library ever loaded there (`imported`: pairs of
    library and device) keeps after its models are gone."""
    costs = RUNTIME_COSTS if costs is None else costs
    on_device = [r for r in resident if r.device == device]
    libraries = {r.library for r in on_device if r.library}
    if device == "cuda" and libraries & IN_PROCESS_CUDA:
        libraries.add("cuda")
    total = 0
    for lib in libraries:
        cost = costs.get((lib, device), RuntimeCost())
        total += cost.shared + cost.each * sum(1 for r in on_device if r.library == lib)
    gone = {lib for lib, d in imported if d == device} - libraries
    if device == "cuda" and gone & IN_PROCESS_CUDA and "cuda" not in libraries:
        gone.add("cuda")
    return total + sum(costs.get((lib, device), RuntimeCost()).kept for lib in gone)


def used_on(device: str, resident: Iterable[Resident], imported: Iterable[tuple[str, str]] = (),
            costs: dict[tuple[str, str], RuntimeCost] | None = None) -> int:
    """Bytes counted on `device`: its models' sizes and their libraries' runtime costs."""
    resident = list(resident)
    return (sum(r.size for r in resident if r.device == device)
            + runtime_cost(device, resident, imported, costs))


def room_on(device: str, budgets: dict[str, int], resident: Iterable[Resident],
            imported: Iterable[tuple[str, str]] = (), costs: dict[tuple[str, str], RuntimeCost] | None = None) -> int:
    """What the budget of `device` leaves free beside the resident models and their runtimes
    (never below 0): what a model being loaded there may use, weights and working memory together."""
    return max(0, budgets.get(device, 0) - used_on(device, resident, imported, costs))


def plan_placement(name: str, size: int, budgets: dict[str, int],
                   resident: Sequence[Resident], library: str = "",
                   imported: Iterable[tuple[str, str]] = (),
                   costs: dict[tuple[str, str], RuntimeCost] | None = None) -> Placement:
    """Where to load a model and what to evict for it.

    Devices are tried in the order of `budgets` (the GPU first when there is one). On each, the
    model goes into free room if it can; else the least recently used idle, unpinned models
    are evicted until it fits. Only when even that cannot make room does it fall back to the
    next device. Raises ModelDoesNotFit when no device can hold it.

    The model's `library` brings its runtime cost along when no model of it is resident on the
    device yet; evicting a library's last model there frees its cost but what it `kept`, which
    stays counted for every library in `imported` (see `runtime_cost`).
    """
    imported = list(imported)
    for device, budget in budgets.items():
        new = Resident(name, device, size, float("inf"), library=library)
        if size + runtime_cost(device, [new], imported, costs) > budget:
            continue
        staying = [r for r in resident if r.device == device]

        def fits() -> bool:
            return used_on(device, staying + [new], imported, costs) <= budget

        if fits():
            return Placement(device)
        evictable = sorted((r for r in staying if not r.pinned and not r.busy),
                           key=lambda r: r.last_used)
        chosen: list[str] = []
        for r in evictable:
            chosen.append(r.name)
            staying.remove(r)
            if fits():
                return Placement(device, tuple(chosen))
    free_now = {d: b - used_on(d, resident, imported, costs) for d, b in budgets.items()}
    raise ModelDoesNotFit(name, size, free_now)


def expired(resident: Iterable[Resident], now: float, keep_alive_s: float) -> list[str]:
    """Idle, unpinned models whose keep-alive has run out."""
    if keep_alive_s <= 0:
        return []
    return [r.name for r in resident
            if not r.pinned and not r.busy and now - r.last_used >= keep_alive_s]


# -- devices --------------------------------------------------------------------------------

def system_memory_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@functools.cache
def _glibc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):    # not glibc (musl, macOS): nothing to trim
        return None


def release_freed_memory() -> None:
    """Give the OS back what unloaded models freed: collect cycles (a torch module graph holds
    its tensors through them), then glibc's malloc_trim, which returns the free pages of every
    malloc arena; glibc keeps them otherwise, and with one arena per thread that touched the
    model they add up to hundreds of MiB."""
    gc.collect()
    trim = _glibc_trim()
    if trim is not None:
        trim(0)


def device_budgets(gpu_total: int | None, device: str, gpu_budget_mb: int, cpu_budget_mb: int) -> dict[str, int]:
    """The budget per device, GPU first. A GPU keeps 10% back for the CUDA context and
    activations; the CPU gets 75% of system RAM unless told otherwise."""
    budgets: dict[str, int] = {}
    if device in ("auto", "cuda") and gpu_total:
        budgets["cuda"] = gpu_budget_mb * 2**20 if gpu_budget_mb else int(gpu_total * 0.9)
    if device in ("auto", "cpu") or not budgets:
        budgets["cpu"] = cpu_budget_mb * 2**20 if cpu_budget_mb else int(system_memory_bytes() * 0.75)
    return budgets


# -- the owner ------------------------------------------------------------------------------

@dataclass
class Loaded:
    name: str
    device: str
    size: int
    instance: Any
    last_used: float
    pinned: bool = False
    users: int = 0
    library: str = ""

    def as_resident(self) -> Resident:
        return Resident(self.name, self.device, self.size, self.last_used, self.pinned,
                        self.users > 0, self.library)


class ModelManager:
    """The one owner of loaded models.

    `load(name, device) -> (instance, measured_bytes or None)` and `unload(instance)` are
    blocking and run in a worker thread; `size_of(name)` is the catalog's estimate and
    `library_of(name)` the runtime it runs in, whose cost (`costs`, RUNTIME_COSTS by default)
    the plan counts beside the models. After each unload what was freed is given back
    (`release_freed_memory`).
    """

    def __init__(self, load: Callable[[str, str], tuple[Any, int | None]],
                 unload: Callable[[Any], None], size_of: Callable[[str], int],
                 budgets: dict[str, int], keep_alive_s: float = 300.0,
                 pinned: Iterable[str] = (), clock: Callable[[], float] = time.monotonic,
                 executor: Executor | None = None,
                 library_of: Callable[[str], str] = lambda name: "",
                 costs: dict[tuple[str, str], RuntimeCost] | None = None):
        self._load, self._unload, self._size_of = load, unload, size_of
        self._library_of = library_of
        self.costs = RUNTIME_COSTS if costs is None else costs
        self.imported: set[tuple[str, str]] = set()   # (library, device) ever loaded: its kept cost stays
        self._executor = executor   # the thread loads and unloads run on (None: asyncio's)
        self.budgets = dict(budgets)
        self.keep_alive_s = keep_alive_s
        self.pinned = set(pinned)
        self.clock = clock
        self._lock = asyncio.Lock()        # guards _loaded and every load/unload
        self._loaded: dict[str, Loaded] = {}
        self.loads = 0
        self.evictions = 0
        self.load_seconds: dict[str, float] = {}
        self._reaper: asyncio.Task | None = None

    def resident_names(self) -> list[str]:
        return list(self._loaded)

    def snapshot(self) -> list[Resident]:
        return [m.as_resident() for m in self._loaded.values()]

    def room(self, device: str) -> int:
        """Room left on `device` within its budget. A loader asks while the lock is held, after
        the evictions its placement needed, so this is what the new model may take."""
        return room_on(device, self.budgets, self.snapshot(), self.imported, self.costs)

    def counted(self, device: str) -> int:
        """Bytes the plan counts on `device` now: resident models and their runtimes."""
        return used_on(device, self.snapshot(), self.imported, self.costs)

    def instance_of(self, name: str) -> Any:
        m = self._loaded.get(name)
        return m.instance if m else None

    async def _blocking(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def discard(self, name: str, instance: Any) -> bool:
        """Forget a loaded model whose process died (if it is still `instance`), so that the
        next acquire loads it again. False when it was already replaced."""
        async with self._lock:
            m = self._loaded.get(name)
            if m is None or m.instance is not instance:
                return m is not None
            alive = getattr(instance, "alive", None)
            if callable(alive) and alive():
                return False
            self._loaded.pop(name).instance = None
            await self._blocking(self._unload, instance)
            await self._blocking(release_freed_memory)
            return True

    def device_of(self, name: str) -> str | None:
        m = self._loaded.get(name)
        return m.device if m else None

    async def acquire(self, name: str) -> tuple[Any, str]:
        """The loaded instance (loading it if needed) and its device; pair with `release`."""
        async with self._lock:
            m = self._loaded.get(name)
            if m is None:
                m = await self._load_locked(name)
            m.users += 1
            m.last_used = self.clock()
            return m.instance, m.device

    def release(self, name: str) -> None:
        m = self._loaded.get(name)
        if m is not None:
            m.users = max(0, m.users - 1)
            m.last_used = self.clock()

    async def _load_locked(self, name: str) -> Loaded:
        size = self._size_of(name)
        library = self._library_of(name)
        placement = plan_placement(name, size, self.budgets, self.snapshot(), library,
                                   self.imported, self.costs)
        for victim in placement.evict:
            log.info("evicting %s to make room for %s", victim, name)
            await self._unload_locked(victim)
            self.evictions += 1
        started = time.monotonic()
        instance, measured = await self._blocking(self._load, name, placement.device)
        self.load_seconds[name] = time.monotonic() - started
        self.loads += 1
        if library:
            self.imported.add((library, placement.device))
        m = Loaded(name, placement.device, measured or size, instance, self.clock(),
                   pinned=name in self.pinned, library=library)
        self._loaded[name] = m
        log.info("loaded %s on %s (%.0f MiB) in %.1f s", name, m.device, m.size / 2**20,
                 self.load_seconds[name])
        return m

    async def _unload_locked(self, name: str) -> None:
        m = self._loaded.pop(name, None)
        if m is not None:
            instance, m.instance = m.instance, None
            await self._blocking(self._unload, instance)
            del instance    # the last reference, so that its memory can be given back
            await self._blocking(release_freed_memory)

    async def unload(self, name: str) -> bool:
        async with self._lock:
            m = self._loaded.get(name)
            if m is None or m.users:
                return False
            await self._unload_locked(name)
            return True

    async def reap(self) -> list[str]:
        """Unload models whose keep-alive ran out."""
        async with self._lock:
            names = expired(self.snapshot(), self.clock(), self.keep_alive_s)
            for name in names:
                log.info("unloading %s after %.0f s idle", name, self.keep_alive_s)
                await self._unload_locked(name)
            return names

    def start(self, every_s: float = 5.0) -> None:
        async def reaper():
            while True:
                await asyncio.sleep(every_s)
                try:
                    await self.reap()
                except Exception:
                    log.exception("keep-alive reaper failed")
        self._reaper = asyncio.create_task(reaper(), name="confab-keepalive")

    async def close(self) -> None:
        if self._reaper:
            self._reaper.cancel()
        async with self._lock:
            for name in list(self._loaded):
                await self._unload_locked(name)
