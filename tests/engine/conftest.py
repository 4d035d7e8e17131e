"""Fixtures for the engine's tests (the knowledge base's modules share them)."""
from __future__ import annotations

import os

import pytest

from engine import Engine
from tests.conftest import make_settings


@pytest.fixture
async def engine(tmp_path, shared_models_dir):
    """A started engine with its state in the test's folder (a module may define its own)."""
    engine = Engine(make_settings(tmp_path / "data", shared_models_dir))
    await engine.start()
    try:
        yield engine
    finally:
        await engine.close()


@pytest.fixture
def cli_env(tmp_path, shared_models_dir, monkeypatch):
    """The `confab` command as a new user runs it: no CONFAB_ settings but its data in the test's
    folder and the shared models, from the test's folder."""
    monkeypatch.chdir(tmp_path)
    for k in list(os.environ):
        if k.startswith("CONFAB_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("CONFAB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CONFAB_MODELS_DIR", str(shared_models_dir))
    return monkeypatch
