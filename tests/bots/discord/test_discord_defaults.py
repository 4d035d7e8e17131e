"""Discord as a server gets it out of the box: the real discord.py client against the loopback
fake of Discord, and an engine on nothing but Confab's defaults (the model's own sampling,
max_tokens 1024, the automatic thread count and chat slots, the context of 4096 tokens, the
history window of 20 messages, 20 requests a minute per person). The rig in rig.py sets short
answers and one thread for the other modules; this one sets nothing but where Discord is. What
it says is judged by the rate over several questions, asked together, not by one answer."""
from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio

from bots.common.commands import Commands
from bots.discord.adapter import DiscordAdapter
from engine import ChatJob, ChatMessage
from engine.runtime.engine import Engine
from tests.bots.discord.rig import WIRE_S, Rig
from tests.conftest import discord_settings, make_settings, requires_chat_model
from tests.defaults import BAR, CAPITALS, rate
from tests.fakes.discord import DiscordFake

pytestmark = [requires_chat_model, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(600)]

T = 300         # seconds: the bound on twelve default-length answers on a shared 2-core machine


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def rig(tmp_path_factory, shared_models_dir):
    fake = DiscordFake(interaction_ack_deadline=WIRE_S)
    await fake.start()
    engine = Engine(make_settings(tmp_path_factory.mktemp("discord-defaults"), shared_models_dir), gpu_total=None)
    door = discord_settings(discord_bot_token=fake.token, discord_api_url=fake.api_base,
                            discord_gateway_url=fake.gateway_url)
    adapter = None
    try:
        await engine.start()
        warm = await engine.submit(ChatJob(messages=[ChatMessage("user", "Hi")], max_tokens=1))
        await asyncio.wait_for(warm.result(), 240)     # the model loaded before the clock matters
        adapter = DiscordAdapter(engine, Commands(engine), door, guild_ready_timeout=0.1, identify_delay=0.1)
        await adapter.start()
        await fake.wait_for_identify(timeout=10)
        await adapter.wait_until_ready(10)
        rig = Rig(fake, engine, adapter)
        yield rig
        assert not rig.late_acks(), rig.late_acks()
    finally:
        for handle in engine.active_jobs():
            await handle.cancel()
        if adapter is not None:
            await adapter.stop()
        await engine.close()
        await fake.stop()


async def test_mentions_and_dms_with_the_defaults_name_the_capitals(rig):
    fake, s, door = rig.fake, rig.engine.settings, rig.adapter.settings
    assert (s.max_tokens, s.threads, s.chat_slots, s.history_messages, door.discord_user_rate) == (1024, 0, 0, 20, 20)
    asked = []
    for country, capital in CAPITALS:
        question = f"What is the capital of {country}?"
        # in the channel (a reply chain each), and in a DM, one conversation with its history,
        # as people use it; by two people, so that neither has more than the 8 jobs at once
        # a person may have queued by default (CONFAB_USER_QUEUE_MAX)
        for message in (fake.message_create_mention(question, author=fake.user),
                        fake.message_create_dm(question, author=fake.other_user)):
            await fake.dispatch("MESSAGE_CREATE", message)
            asked.append((message, capital))
    replies = await asyncio.gather(*(rig.bot_reply_to(m["id"], timeout=T) for m, _ in asked))
    finals = await asyncio.gather(*(rig.answered(r["id"], timeout=T) for r in replies))
    await rig.handled(T)
    texts = [f["content"] for f in finals]
    assert rate(texts, [c for _, c in asked]) >= BAR, texts
    assert not any("limit" in t.lower() for t in texts), texts        # no default limit was met
    jobs = rig.jobs()[1:]                                              # past the warm-up
    assert len(jobs) == len(asked)
    assert all(h.status == "done" for h in jobs)
    assert all(h.job.temperature is None and h.job.top_p is None and h.job.max_tokens in (None, s.max_tokens)
               for h in jobs), [(h.job.temperature, h.job.max_tokens) for h in jobs]
