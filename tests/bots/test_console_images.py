"""/imagine in the terminal console with the tiny diffusers pipeline: queued status, "step k of
N" lines, the picture saved as a file; `/cancel` typed while it draws stops it, `/reroll` draws
the last picture again with a new seed. Typed through a real pipe, as a terminal would."""
from __future__ import annotations

import asyncio
import io
import os
import re

import pytest
import pytest_asyncio

from bots.common.commands import Commands
from bots.common.image_commands import register_commands
from bots.console.console import NOTHING_TO_REROLL, Console
from engine.runtime.engine import Engine
from tests.conftest import make_settings
from tests.models.tiny_diffusers import tiny_sd

pytest.importorskip("diffusers")
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine(tmp_path_factory, shared_models_dir):
    settings = make_settings(tmp_path_factory.mktemp("console-images"), shared_models_dir,
                             threads=2, max_image_side=256, max_image_steps=200)
    eng = Engine(settings, gpu_total=None)
    eng.registry.add(tiny_sd(), name="tiny-sd")
    eng.refresh_models()
    await eng.start(resume=False)
    yield eng
    await eng.close()


class Terminal:
    """A console reading a pipe, and the text it printed so far."""

    def __init__(self, engine):
        read_fd, self.write_fd = os.pipe()
        self.out = io.StringIO()
        commands = Commands(engine)
        register_commands(commands)
        self.console = Console(engine, commands, stdin=os.fdopen(read_fd, "r"), stdout=self.out,
                               user="ines")
        self.task = asyncio.create_task(self.console.run())

    def type(self, line: str) -> None:
        os.write(self.write_fd, (line + "\n").encode())

    async def shows(self, pattern: str, timeout: float = 60) -> str:
        async def wait():
            while not re.search(pattern, self.out.getvalue()):
                await asyncio.sleep(0.02)
        await asyncio.wait_for(wait(), timeout)
        return self.out.getvalue()

    async def close(self) -> str:
        os.close(self.write_fd)
        await asyncio.wait_for(self.task, 60)
        self.console.stdin.close()
        return self.out.getvalue()


async def test_imagine_progress_file_and_reroll(engine):
    term = Terminal(engine)
    term.type("/reroll")
    await term.shows(re.escape(NOTHING_TO_REROLL))
    term.type("/imagine a lighthouse --steps 2 --seed 5")
    out = await term.shows(r"saved to .*confab-5\.png")
    assert "🎨 Queued “a lighthouse”" in out and "(/cancel stops it)" in out
    assert "step 2 of 2" in out
    await term.shows(r"seed 5 · 2 steps")
    term.type("/reroll")
    out = await term.shows(r"saved to .*confab-(?!5\.)\d+\.png")
    files = sorted(p.name for p in (engine.settings.data_path / "console").iterdir())
    assert len(files) == 2 and "confab-5.png" in files
    out = await term.close()
    assert out.count("(/reroll draws it again with a new seed)") == 2


async def test_cancel_typed_while_it_draws_stops_it(engine):
    term = Terminal(engine)
    term.type("/imagine a storm --steps 200")
    await term.shows(r"step \d+ of 200")
    term.type("/cancel")
    out = await term.shows("🛑 Cancelled.")
    term.type("/queue")
    out = await term.shows("no jobs waiting or running")
    steps = [int(k) for k in re.findall(r"step (\d+) of 200", out)]
    assert max(steps) < 200 and "saved to" not in out
    await term.close()
