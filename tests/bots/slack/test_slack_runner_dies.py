"""A chat runner (llama-server) that dies in the middle of an answer, as a Slack thread meets it
(issue 19, point 4): the real slack-bolt over Socket Mode, the real SmolLM2 runner at the model's
own sampling (a non-zero temperature), the runner killed with SIGKILL once part of the answer was
shown in Slack. The engine cannot continue a sampled answer in a new process, so the job fails
(tests/engine/test_runner.py tests that at the engine): here, what the person sees is the part
that was shown, kept as it was, and a note under it that says so in words, never a second
answer; and the next question is answered by a new runner."""
from __future__ import annotations

import os
import signal

import pytest
import pytest_asyncio

from engine import Settings
from tests.bots.slack.conftest import running_confab, warmed_engine
from tests.conftest import CHAT_MODEL, requires_chat_model
from tests.fakes.slack import SlackFake

pytestmark = [requires_chat_model, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine(tmp_path_factory, shared_models_dir):
    # Confab's defaults but for one thread (a long answer to cut in the middle, on a shared
    # machine) and a quick edit interval, so that part of the answer is on Slack early
    settings = Settings.from_env(env={}, dotenv=None, data_dir=str(tmp_path_factory.mktemp("dies")),
                                 models_dir=str(shared_models_dir), threads=1)
    async with warmed_engine(settings) as e:
        yield e


async def test_a_runner_killed_mid_answer_keeps_what_was_shown_and_says_so(engine):
    fake = SlackFake(ack_deadline=30.0)
    await fake.start()
    try:
        async with running_confab(fake, "socket", engine, slack_edit_interval_s=0.3) as confab:
            mention = await confab.mention("Write a long story about a dragon who learns to sail.", user="U2")

            def shown():      # an edit of the answer with some of its words in it
                return [c for c in fake.calls_to("chat.update")
                        if c.ok and c.params.get("text", "").count(" ") >= 3 and "▌" in c.params["text"]]
            edits = await fake.wait_until(shown, 120, "part of the answer shown")
            runner = engine.models.instance_of(CHAT_MODEL)
            os.killpg(runner.process.pid, signal.SIGKILL)
            job_id = await confab.settled(f"slack:C1:{mention['ts']}", timeout=120)
            assert edits[0].params["text"].strip("▌ ")                      # words had been shown
            record = await engine.store.get_job(job_id)
            assert record["status"] == "failed" and "stopped answering" in record["error"]
            # what was shown stays as it was (the cursor gone), and a note under it says what
            # happened: no second answer, nothing shown taken back
            partial, note = fake.bot_messages("C1", mention["ts"])
            assert partial["text"].startswith(edits[0].params["text"].rstrip("▌ ")), partial["text"]
            assert "▌" not in partial["text"]
            assert "stopped answering" in note["text"] and "ask again" in note["text"], note["text"]
            # the next question gets a new runner and an answer
            again = await confab.mention("What is the capital of Japan?", user="U2")
            answer = await confab.answer("C1", again["ts"], timeout=120)
            assert answer["text"].strip()
            assert engine.models.instance_of(CHAT_MODEL) is not runner
            await confab.idle()
        assert not fake.problems, fake.problems
    finally:
        await fake.stop()
