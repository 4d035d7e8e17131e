"""The terminal console as it starts out of the box: an engine on nothing but Confab's defaults
(the model's own sampling, max_tokens 1024, the automatic thread count and slots, the history
window of 20 messages), six questions typed one after another in one session, judged by the
rate over them, not by one answer."""
from __future__ import annotations

import asyncio
import io

import pytest

from bots.common.commands import Commands
from bots.console.console import Console
from engine.runtime.engine import Engine
from tests.conftest import make_settings, requires_chat_model
from tests.defaults import BAR, CAPITALS, rate

pytestmark = [requires_chat_model, pytest.mark.asyncio, pytest.mark.timeout(600)]


async def test_a_session_with_the_defaults_names_the_capitals(tmp_path, shared_models_dir):
    engine = Engine(make_settings(tmp_path, shared_models_dir), gpu_total=None)
    s = engine.settings
    assert (s.max_tokens, s.threads, s.chat_slots, s.history_messages) == (1024, 0, 0, 20)
    await engine.start()
    try:
        typed = "".join(f"What is the capital of {country}?\n" for country, _ in CAPITALS)
        out = io.StringIO()
        console = Console(engine, Commands(engine), stdin=io.StringIO(typed), stdout=out, user="dan")
        await asyncio.wait_for(console.run(), 540)
        answers = [turn.strip() for turn in out.getvalue().split("you> ")[1:1 + len(CAPITALS)]]
        assert len(answers) == len(CAPITALS), out.getvalue()
        assert rate(answers, [c for _, c in CAPITALS]) >= BAR, answers
        history = await engine.history(f"console:dan:{console.session}")
        assert len(history) == 2 * len(CAPITALS)          # one session: each turn saw the ones before
    finally:
        await engine.close()
