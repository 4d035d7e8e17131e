"""Fit and eviction as pure functions, and the one owner of loaded models on a fake clock."""
from __future__ import annotations

import asyncio
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import ModelDoesNotFit
from engine.runtime.memory import ModelManager, Resident, expired, plan_placement, room_on, used_on

MB = 2**20


def r(name, device="cuda", size=100, last_used=0.0, pinned=False, busy=False):
    return Resident(name, device, size * MB, last_used, pinned, busy)


# -- plan_placement -------------------------------------------------------------------------------

def test_fits_in_free_room_without_evicting():
    p = plan_placement("new", 100 * MB, {"cuda": 400 * MB, "cpu": 1000 * MB},
                       [r("a", size=100), r("b", size=100)])
    assert p.device == "cuda" and p.evict == ()


def test_evicts_least_recently_used_idle_unpinned_first():
    resident = [r("old", last_used=1), r("older", last_used=0), r("new", last_used=5)]
    p = plan_placement("x", 150 * MB, {"cuda": 400 * MB}, resident)
    assert p.device == "cuda" and p.evict == ("older",)
    p = plan_placement("x", 250 * MB, {"cuda": 400 * MB}, resident)
    assert p.evict == ("older", "old")


def test_pinned_and_busy_are_never_evicted():
    resident = [r("pinned", last_used=0, pinned=True), r("busy", last_used=1, busy=True),
                r("idle", last_used=9)]
    p = plan_placement("x", 200 * MB, {"cuda": 400 * MB}, resident)
    assert p.evict == ("idle",)
    with pytest.raises(ModelDoesNotFit):
        plan_placement("x", 300 * MB, {"cuda": 400 * MB}, resident)


def test_falls_back_to_cpu_only_when_evicting_cannot_make_room():
    budgets = {"cuda": 400 * MB, "cpu": 2000 * MB}
    # evicting the idle model makes room on the GPU: no fallback
    p = plan_placement("x", 300 * MB, budgets, [r("idle", size=300)])
    assert p == plan_placement("x", 300 * MB, budgets, [r("idle", size=300)])
    assert p.device == "cuda" and p.evict == ("idle",)
    # the GPU is held by busy and pinned models: the CPU takes it, evicting nothing there
    p = plan_placement("x", 300 * MB, budgets, [r("busy", size=200, busy=True),
                                                 r("pin", size=100, pinned=True),
                                                 r("cpu-idle", device="cpu", size=100)])
    assert p.device == "cpu" and p.evict == ()
    # bigger than the whole GPU
    p = plan_placement("x", 500 * MB, budgets, [])
    assert p.device == "cpu"


def test_does_not_fit_anywhere_is_a_clear_error():
    with pytest.raises(ModelDoesNotFit) as e:
        plan_placement("huge", 5000 * MB, {"cuda": 400 * MB, "cpu": 2000 * MB},
                       [r("a", device="cpu", size=500)])
    assert e.value.model == "huge"
    assert "huge" in e.value.message and "5000 MiB" in e.value.message
    assert "cpu: 1500 MiB free" in e.value.message
    assert e.value.status == 503


def test_expired_keep_alive():
    resident = [r("stale", last_used=0), r("fresh", last_used=250),
                r("pinned", last_used=0, pinned=True), r("busy", last_used=0, busy=True)]
    assert expired(resident, 300, 300) == ["stale"]
    assert expired(resident, 299, 300) == []
    assert sorted(expired(resident, 600, 300)) == ["fresh", "stale"]
    assert expired(resident, 10**9, 0) == []      # keep-alive 0 means keep forever


residents = st.lists(
    st.builds(Resident, name=st.text("abcdefgh", min_size=1, max_size=3),
              device=st.sampled_from(["cuda", "cpu"]), size=st.integers(1, 800).map(lambda n: n * MB),
              last_used=st.floats(0, 1000), pinned=st.booleans(), busy=st.booleans()),
    max_size=8, unique_by=lambda x: x.name)


@settings(max_examples=300, deadline=None)
@given(residents, st.integers(1, 1200), st.integers(100, 1000), st.integers(100, 2000),
       st.booleans())
def test_a_placement_plan_adds_up_within_the_budget(resident, size_mb, gpu_mb, cpu_mb, has_gpu):
    """The plan's arithmetic on declared sizes: what stays plus what loads fits the device's
    budget, evicting only what it must. It says nothing of the memory the process really takes
    (a model's size may be estimated, and a load may take more than its size)."""
    budgets = ({"cuda": gpu_mb * MB} if has_gpu else {}) | {"cpu": cpu_mb * MB}
    # a state that respects the budgets to begin with
    resident = [x for x in resident if x.device in budgets]
    for device, budget in budgets.items():
        while used_on(device, resident) > budget:
            resident.remove(next(x for x in resident if x.device == device))
    size = size_mb * MB
    try:
        p = plan_placement("new", size, budgets, resident)
    except ModelDoesNotFit:
        # nowhere: not even after evicting every idle unpinned model
        for device, budget in budgets.items():
            keep = sum(x.size for x in resident if x.device == device and (x.pinned or x.busy))
            assert keep + size > budget
        return
    by_name = {x.name: x for x in resident}
    evicted = [by_name[n] for n in p.evict]
    assert all(e.device == p.device and not e.pinned and not e.busy for e in evicted)
    after = used_on(p.device, resident) - sum(e.size for e in evicted) + size
    assert after <= budgets[p.device]
    # only what was needed, least recently used first
    assert [e.last_used for e in evicted] == sorted(e.last_used for e in evicted)
    if evicted:
        assert after - size + evicted[-1].size > budgets[p.device] - size
    # an earlier device was passed over only when evicting could not make room there
    for device in list(budgets)[: list(budgets).index(p.device)]:
        keep = sum(x.size for x in resident if x.device == device and (x.pinned or x.busy))
        assert keep + size > budgets[device]


# -- the owner ------------------------------------------------------------------------------------

class FakeBackend:
    def __init__(self, sizes: dict[str, int], measured: dict[str, int] | None = None):
        self.sizes, self.measured = sizes, measured or {}
        self.loads: list[tuple[str, str]] = []
        self.unloads: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        self.lock = threading.Lock()
        self.live: set[str] = set()

    def load(self, name: str, device: str):
        self.gate.wait(10)
        with self.lock:
            assert name not in self.live, f"{name} loaded twice"
            self.live.add(name)
            self.loads.append((name, device))
        return {"model": name}, self.measured.get(name)

    def unload(self, instance) -> None:
        with self.lock:
            self.live.discard(instance["model"])
            self.unloads.append(instance["model"])

    def size_of(self, name: str) -> int:
        return self.sizes[name]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def manager(backend, budgets, keep_alive=300.0, pinned=(), clock=None):
    return ModelManager(backend.load, backend.unload, backend.size_of, budgets, keep_alive,
                        pinned, clock or Clock())


async def test_several_models_stay_resident_and_lru_is_evicted():
    backend = FakeBackend({"a": 100 * MB, "b": 100 * MB, "c": 100 * MB, "d": 200 * MB})
    clock = Clock()
    mm = manager(backend, {"cpu": 350 * MB}, clock=clock)
    for name in ("a", "b", "c"):
        clock.now += 1
        inst, device = await mm.acquire(name)
        assert inst == {"model": name} and device == "cpu"
        mm.release(name)
    assert sorted(mm.resident_names()) == ["a", "b", "c"] and mm.loads == 3
    clock.now += 1
    await mm.acquire("a")          # a is warm again: no load, and now the most recent
    mm.release("a")
    assert mm.loads == 3
    clock.now += 1
    await mm.acquire("d")          # needs 200: evicts b (LRU), then c; a stays
    assert backend.unloads == ["b", "c"] and mm.evictions == 2
    assert sorted(mm.resident_names()) == ["a", "d"]
    mm.release("d")
    await mm.close()
    assert not backend.live


async def test_busy_model_is_not_evicted_and_gpu_falls_back_to_cpu():
    backend = FakeBackend({"big": 300 * MB, "other": 200 * MB})
    mm = manager(backend, {"cuda": 400 * MB, "cpu": 1000 * MB})
    _, device = await mm.acquire("big")          # held: busy
    assert device == "cuda"
    _, device = await mm.acquire("other")
    assert device == "cpu"                        # the GPU's only model is busy
    assert mm.evictions == 0
    mm.release("big")
    mm.release("other")
    await mm.close()


async def test_room_is_the_budget_less_what_is_resident():
    backend = FakeBackend({"a": 100 * MB, "b": 150 * MB})
    mm = manager(backend, {"cuda": 400 * MB, "cpu": 1000 * MB})
    assert mm.room("cuda") == 400 * MB and mm.room("mps") == 0
    await mm.acquire("a")
    await mm.acquire("b")
    assert mm.room("cuda") == 150 * MB and mm.room("cpu") == 1000 * MB
    assert room_on("cuda", {"cuda": 100 * MB}, mm.snapshot()) == 0      # over budget: none left
    await mm.close()


async def test_measured_size_replaces_the_estimate():
    backend = FakeBackend({"a": 100 * MB, "b": 100 * MB}, measured={"a": 250 * MB})
    mm = manager(backend, {"cpu": 300 * MB})
    await mm.acquire("a")
    mm.release("a")
    assert mm.snapshot()[0].size == 250 * MB
    await mm.acquire("b")                         # 250 + 100 > 300: a goes
    assert mm.resident_names() == ["b"]
    await mm.close()


async def test_model_that_fits_nowhere_fails_clearly():
    backend = FakeBackend({"huge": 10_000 * MB})
    mm = manager(backend, {"cpu": 500 * MB})
    with pytest.raises(ModelDoesNotFit):
        await mm.acquire("huge")
    assert backend.loads == [] and mm.resident_names() == []


async def test_keep_alive_reaps_idle_unpinned_models():
    backend = FakeBackend({"a": MB, "b": MB, "p": MB})
    clock = Clock()
    mm = manager(backend, {"cpu": 100 * MB}, keep_alive=60, pinned=["p"], clock=clock)
    for name in ("a", "b", "p"):
        await mm.acquire(name)
    mm.release("a")
    mm.release("p")           # b stays in use
    clock.now = 59
    assert await mm.reap() == []
    clock.now = 61
    assert await mm.reap() == ["a"]
    assert sorted(mm.resident_names()) == ["b", "p"]
    mm.release("b")
    clock.now = 200
    assert await mm.reap() == ["b"]
    assert mm.resident_names() == ["p"]          # pinned stays
    assert await mm.unload("p") is True          # an explicit unload still works
    assert await mm.unload("p") is False
    await mm.close()


async def test_unload_refuses_a_model_in_use():
    backend = FakeBackend({"a": MB})
    mm = manager(backend, {"cpu": 100 * MB})
    await mm.acquire("a")
    assert await mm.unload("a") is False
    mm.release("a")
    assert await mm.unload("a") is True
    await mm.close()


async def test_concurrent_acquires_load_once():
    backend = FakeBackend({"a": MB, "b": MB})
    backend.gate.clear()
    mm = manager(backend, {"cpu": 100 * MB})
    tasks = [asyncio.create_task(mm.acquire(n)) for n in ("a", "a", "b", "a", "b")]
    await asyncio.sleep(0.05)
    backend.gate.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert sorted(n for n, _ in backend.loads) == ["a", "b"]
    assert mm.loads == 2
    assert [inst["model"] for inst, _ in results] == ["a", "a", "b", "a", "b"]
    for n in ("a", "a", "b", "a", "b"):
        mm.release(n)
    await mm.close()
    assert sorted(backend.unloads) == ["a", "b"]


async def test_reaper_task_runs_on_its_own():
    backend = FakeBackend({"a": MB})
    clock = Clock()
    mm = manager(backend, {"cpu": 100 * MB}, keep_alive=1, clock=clock)
    await mm.acquire("a")
    mm.release("a")
    clock.now = 10
    mm.start(every_s=0.01)

    async def gone():
        while mm.resident_names():
            await asyncio.sleep(0.01)
    await asyncio.wait_for(gone(), 5)
    await mm.close()
