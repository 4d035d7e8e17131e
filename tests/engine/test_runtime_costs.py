"""The memory plan counts what libraries hold beside their models (pure functions, no GPU), and
a process that loads real models under a tight budget stays within it."""
from __future__ import annotations

import asyncio

import pytest

from engine.errors import ModelDoesNotFit
from engine.runtime.memory import (
    ModelManager,
    Resident,
    RuntimeCost,
    plan_placement,
    room_on,
    runtime_cost,
    used_on,
)

MB = 2**20
COSTS = {
    ("onnxruntime", "cpu"): RuntimeCost(shared=80 * MB, kept=60 * MB),
    ("torch", "cpu"): RuntimeCost(shared=400 * MB, kept=400 * MB),
    ("ctranslate2", "cpu"): RuntimeCost(shared=100 * MB, kept=100 * MB),
    ("llama-server", "cpu"): RuntimeCost(each=20 * MB),
    ("cuda", "cuda"): RuntimeCost(shared=300 * MB, kept=300 * MB),
    ("torch", "cuda"): RuntimeCost(shared=50 * MB),
    ("ctranslate2", "cuda"): RuntimeCost(shared=200 * MB),
    ("llama-server", "cuda"): RuntimeCost(each=250 * MB),
}


def r(name, device="cpu", size=100, last_used=0.0, library="", pinned=False, busy=False):
    return Resident(name, device, size * MB, last_used, pinned, busy, library)


def test_a_library_is_counted_once_however_many_of_its_models_are_resident():
    one = [r("voice", library="onnxruntime")]
    two = one + [r("ocr", library="onnxruntime")]
    assert runtime_cost("cpu", one, costs=COSTS) == 80 * MB
    assert runtime_cost("cpu", two, costs=COSTS) == 80 * MB
    assert used_on("cpu", two, costs=COSTS) == 280 * MB
    # a library that runs each model in its own process pays per model
    assert runtime_cost("cpu", [r("a", library="llama-server"), r("b", library="llama-server")], costs=COSTS) == 40 * MB


def test_what_a_library_keeps_stays_counted_after_its_models_are_gone():
    assert runtime_cost("cpu", [], imported={("onnxruntime", "cpu")}, costs=COSTS) == 60 * MB
    # while one of its models is resident, its shared cost covers what it keeps
    assert runtime_cost("cpu", [r("v", library="onnxruntime")], imported={("onnxruntime", "cpu")}, costs=COSTS) == 80 * MB
    # imported on another device: nothing here
    assert runtime_cost("cpu", [], imported={("torch", "cuda")}, costs=COSTS) == 0


def test_a_model_that_fits_by_its_size_alone_is_evicted_for_when_its_library_does_not():
    budgets = {"cpu": 450 * MB}
    resident = [r("voice", size=200, library="onnxruntime", last_used=1)]
    # 200 + 80 resident; whisper 300 + its runtime 100 would need 680: the voice goes, but
    # onnxruntime keeps 60 after it, so 60 + 300 + 100 = 460 still does not fit
    with pytest.raises(ModelDoesNotFit):
        plan_placement("whisper", 300 * MB, budgets, resident, "ctranslate2", {("onnxruntime", "cpu")}, COSTS)
    p = plan_placement("whisper", 280 * MB, budgets, resident, "ctranslate2", {("onnxruntime", "cpu")}, COSTS)
    assert p.device == "cpu" and p.evict == ("voice",)
    # a second model of a resident library brings no second runtime cost
    p = plan_placement("ocr", 150 * MB, budgets, resident, "onnxruntime", {("onnxruntime", "cpu")}, COSTS)
    assert p == plan_placement("ocr", 150 * MB, budgets, resident, "onnxruntime", (), COSTS)
    assert p.evict == ()


def test_a_model_larger_than_the_budget_with_its_runtime_is_refused_without_evicting():
    with pytest.raises(ModelDoesNotFit):
        plan_placement("emb", 100 * MB, {"cpu": 450 * MB}, [r("x", last_used=0)], "torch", (), COSTS)


# -- the GPU path: what CUDA's caching allocators and contexts hold, decided without a GPU ----

def test_the_cuda_context_is_counted_once_for_all_in_process_libraries():
    resident = [r("emb", "cuda", library="torch"), r("stt", "cuda", library="ctranslate2")]
    assert runtime_cost("cuda", resident, costs=COSTS) == (300 + 50 + 200) * MB
    # runners are processes of their own: each has its own context, and no shared one
    assert runtime_cost("cuda", [r("chat", "cuda", library="llama-server")], costs=COSTS) == 250 * MB
    # after the last in-process model left the GPU, its context stays
    assert runtime_cost("cuda", [], imported={("torch", "cuda")}, costs=COSTS) == 300 * MB


def test_a_model_goes_to_the_cpu_when_the_cuda_runtime_would_overflow_the_gpu():
    budgets = {"cuda": 1000 * MB, "cpu": 4000 * MB}
    # by size alone 600 fits the 1000 MiB card; with the CUDA context (300) and CTranslate2's
    # cache (200) it does not: it runs on the CPU instead of failing with out-of-memory later
    p = plan_placement("stt", 600 * MB, budgets, [], "ctranslate2", (), COSTS)
    assert p.device == "cpu"
    p = plan_placement("stt", 450 * MB, budgets, [], "ctranslate2", (), COSTS)
    assert p.device == "cuda"
    # a torch model beside it shares the context: only its own allocator's cost is added
    resident = [r("stt", "cuda", size=450, library="ctranslate2", busy=True)]
    assert plan_placement("emb", 0, budgets, resident, "torch", (), COSTS).device == "cuda"
    assert plan_placement("emb", 1 * MB, budgets, resident, "torch", (), COSTS).device == "cpu"


def test_room_left_for_a_budget_aware_loader_counts_the_runtimes():
    resident = [r("chat", "cuda", size=300, library="llama-server")]
    assert room_on("cuda", {"cuda": 1000 * MB}, resident, costs=COSTS) == 450 * MB


# -- the owner keeps count of what was imported -------------------------------------------------

def test_the_manager_counts_what_an_unloaded_library_keeps():
    sizes = {"voice": 200 * MB, "stt": 250 * MB}
    libs = {"voice": "onnxruntime", "stt": "ctranslate2"}
    released = []
    manager = ModelManager(lambda name, device: (object(), None), lambda inst: released.append(inst),
                           sizes.__getitem__, {"cpu": 450 * MB}, library_of=libs.__getitem__,
                           costs=COSTS)

    async def go():
        await manager.acquire("voice")
        manager.release("voice")
        assert manager.counted("cpu") == 280 * MB
        await manager.acquire("stt")       # 280 + 350 > 450: the voice is evicted
        manager.release("stt")
        assert manager.resident_names() == ["stt"]
        assert manager.counted("cpu") == (250 + 100 + 60) * MB
        assert manager.imported == {("onnxruntime", "cpu"), ("ctranslate2", "cpu")}
        await manager.close()
        assert manager.counted("cpu") == (60 + 100) * MB

    asyncio.run(go())
    assert len(released) == 2


# -- the process itself -------------------------------------------------------------------------

def _runner_built() -> bool:
    from models import llama_runner
    try:
        llama_runner.find_binary()
        return True
    except llama_runner.RunnerError:
        return False


@pytest.mark.skipif(not _runner_built(), reason="llama-server is not built (make setup-test)")
def test_real_models_under_a_tight_budget_keep_the_process_within_it():
    """Chat (a runner process), Whisper base (CTranslate2) and the Piper voice (onnxruntime),
    used in turn twice under 450 MiB, in a fresh process: the resident memory of Confab and
    its runner never goes past idle + budget, and what the plan counts never past the budget.
    A model the plan cannot fit is refused with its reason, never loaded over the budget."""
    from tests.bench.bench_memory import CHAT_SMALL, cycle_in_child
    out = cycle_in_child(["chat", "stt", "tts"], rounds=2, budget_mb=450, **CHAT_SMALL)
    assert out["counted_peak"] <= out["budget"]
    assert out["peak"] <= out["idle"] + out["budget"], (
        f"peak {out['peak'] / MB:.0f} MiB over idle {out['idle'] / MB:.0f} + budget "
        f"{out['budget'] / MB:.0f}; refused: {out['refused']}")
    assert out["loads"] >= 3                       # each of the three ran at least once
    assert all("fits on no device" in why for why in out["refused"])
