"""Nothing lost: a mention accepted before a restart is answered after it, in the placeholder
posted for it then (never a second answer). The first Confab's model never loads (its loader
waits on a gate), so the job is still queued when it stops; the second runs the real SmolLM2."""
from __future__ import annotations

import asyncio
import threading

import pytest

from bots.common.commands import Commands
from bots.discord.adapter import DiscordAdapter
from engine.engine import Engine
from tests.conftest import make_settings, requires_chat_model
from tests.fakes.discord_fake import DiscordFake

pytestmark = [requires_chat_model, pytest.mark.asyncio, pytest.mark.timeout(300)]


async def test_a_job_accepted_before_a_restart_is_answered_in_its_placeholder(tmp_path, shared_models_dir):
    async with DiscordFake() as fake:
        settings = make_settings(tmp_path, shared_models_dir, discord_bot_token=fake.token,
                                 discord_api_url=fake.api_base, discord_gateway_url=fake.gateway_url,
                                 max_tokens=24, threads=1, context_tokens=2048)
        gate = threading.Event()

        def never(name, device):
            gate.wait(60)
            raise RuntimeError("stopped")

        first = Engine(settings, load=never, gpu_total=None)
        await first.start()
        adapter = DiscordAdapter(first, Commands(first), guild_ready_timeout=0.1, identify_delay=0.1)
        await adapter.start()
        await fake.wait_for_identify(timeout=10)
        mention = fake.message_create_mention("What is the capital of France?")
        await fake.dispatch("MESSAGE_CREATE", mention)
        placeholder = await fake.wait_for("POST", f"/channels/{fake.channel_id}/messages", timeout=30)
        job_id = next(iter(first._handles))
        await asyncio.sleep(0.3)                       # the reply record is saved after the post
        await adapter.stop()
        gate.set()
        await first.close()

        second = Engine(settings, gpu_total=None)
        await second.start()
        again = DiscordAdapter(second, Commands(second), guild_ready_timeout=0.1, identify_delay=0.1)
        await again.start()
        try:
            mid = placeholder.response["id"]

            async def answered():
                while "confab:speak" not in str(fake.messages[mid]["components"]) and not (
                        second.handle(job_id) and second.handle(job_id).status == "failed"):
                    await asyncio.sleep(0.1)
            await asyncio.wait_for(answered(), 200)
            assert (await second.handle(job_id).result()).text.strip() == fake.messages[mid]["content"]
            replies = [m for m in fake.sent_by_bot(fake.channel_id)
                       if (m.get("message_reference") or {}).get("message_id") == mention["id"]]
            assert [m["id"] for m in replies] == [mid]
        finally:
            await again.stop()
            await second.close()
