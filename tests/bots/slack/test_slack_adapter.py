"""The Slack scenario suite: each test runs over Socket Mode and over signed HTTP."""
from __future__ import annotations

import asyncio

import pytest

pytestmark = pytest.mark.timeout(90)


async def test_mention_is_answered_once_in_its_thread(confab):
    fake = confab.fake
    mention = await confab.mention("What is the capital of France?")
    answer = await confab.answer("C1", mention["ts"])
    assert answer["thread_ts"] == mention["ts"] and answer["text"].strip()
    await confab.idle()
    await asyncio.sleep(0.3)   # a second answer to the twin event would be posted by now
    answers = [m for m in fake.bot_messages("C1", mention["ts"])]
    assert len(answers) == 1, answers
    posts = [c for c in fake.calls_to("chat.postMessage") if c.params.get("thread_ts") == mention["ts"]]
    assert len(posts) == 1 and posts[0].params["text"].startswith(("⏳", "✍️"))
    updates = [c for c in fake.calls_to("chat.update") if c.ok and c.params["ts"] == answer["ts"]]
    assert updates and updates[-1].params["text"] == answer["text"]
    assert "<@UBOT>" not in confab.jobs()[-1]["messages"][-1]["content"]
