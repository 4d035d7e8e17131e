"""Scratch folders removed when the process exits (benchmarks, models built once a run): a data
folder holds the joined offline models (~400 MB), and leaving one per run behind fills a disk in
a few days."""
from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path


def scratch_dir(prefix: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder
