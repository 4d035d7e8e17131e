"""Two things a real model does that the warmed SmolLM2 of the other tests does not: an answer
longer than one Slack message (split at Slack's limits, which the fake enforces: msg_too_long
past 40,000 characters of text, invalid_blocks past 3,000 in a section), and a model that takes
seconds to load, during which every event must still be acknowledged within Slack's 3 s."""
from __future__ import annotations

import asyncio
import threading

import pytest
import pytest_asyncio

from engine import Engine
from tests.bots.slack.conftest import running_confab
from tests.conftest import make_settings
from tests.fake_runner import FakeRunnerServer

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]

PARAGRAPHS = [f"Part {i}: **bold** & <tags> with `code`, " + "words " * 150 for i in range(12)]
LONG = "\n\n".join(PARAGRAPHS)          # ~11,000 characters: several Slack messages


SCRIPTED = FakeRunnerServer(lambda body: [w if i == 0 else " " + w for i, w in enumerate(LONG.split(" "))])


class Loader:
    def __init__(self):
        self.release = threading.Event()
        self.started = threading.Event()

    def __call__(self, name: str, device: str):
        self.started.set()
        self.release.wait(60)
        return SCRIPTED.runner(name, n_ctx=8192), 1


@pytest_asyncio.fixture(loop_scope="module")
async def held(tmp_path):
    loader = Loader()
    engine = Engine(make_settings(tmp_path, max_tokens=4000), load=loader, gpu_total=None)  # LONG whole
    await engine.start(resume=False)
    try:
        yield engine, loader
    finally:
        loader.release.set()
        await engine.close()


@pytest.mark.parametrize("mode", ["socket", "http"])
async def test_events_acked_while_the_model_loads_and_a_long_answer_is_split(fake, held, mode):
    engine, loader = held
    async with running_confab(fake, mode, engine) as confab:
        first = await confab.mention("Tell me everything.")
        await asyncio.to_thread(loader.started.wait, 30)
        # the model is loading: more events arrive, each acknowledged in time (deliver checks it)
        await confab.deliver(fake.message_event("chatter, not for Confab"))
        second = await confab.mention("And again.")
        dm = fake.im_event("Hello?", user="U2")
        await confab.deliver(dm)
        loader.release.set()
        await confab.idle()
        for parent in (first["ts"], second["ts"]):
            pieces = [m for m in fake.bot_messages("C1", parent) if confab.is_answer(m, parent)]
            assert len(pieces) >= 2, [len(m["text"]) for m in pieces]
            assert all(len(m["text"]) <= 40_000 for m in pieces)
            shown = " ".join(m["text"] for m in pieces)
            assert all(f"Part {i}:" in shown for i in range(len(PARAGRAPHS)))
            assert "*bold*" in shown and "&amp;" in shown          # mrkdwn, escaped as Slack wants
        await confab.answer(dm["channel"], None)
        in_dm = " ".join(m["text"] for m in fake.messages(dm["channel"], top_level_only=True)
                         if confab.is_answer(m))
        assert "Part 0:" in in_dm and f"Part {len(PARAGRAPHS) - 1}:" in in_dm
        refused = [c for c in fake.calls if c.method.startswith("chat.") and not c.ok]
        assert not refused, [(c.method, c.response) for c in refused]
    assert not fake.problems, fake.problems
