"""Discord adapter throughput: events per second, end to end through the loopback fake, with an
instant engine (a chat "model" that answers at once), so that the figure is the adapter's own
cost: gateway event -> discord.py -> access, history -> engine job (store, queue, worker) ->
placeholder, final edit and button edit over REST. Goal: >= 300 events/s.

The fake runs in a process of its own (tests/bench/remote.py): it plays Discord, whose work is not
Confab's. It dispatches the mentions, waits for every answer and times the run. Its rate-limit
buckets are opened wide here: Discord's real ones (5 messages per 5 s per channel) would measure
Discord, not Confab.

Run: `python -m tests.bench.bench_discord` (or `make bench`).
"""
from __future__ import annotations

import asyncio
import time

from tests.scratch import scratch_dir

EVENTS = 300
WIDE = (10**6, 1.0)


# -- the fake's process ----------------------------------------------------------------------

def _fake_process(conn) -> None:
    from tests.bench.remote import serve
    from tests.fakes.discord import DiscordFake
    from tests.fakes.discord.rest import DEFAULT_BUCKETS
    serve(conn, lambda: DiscordFake(buckets={k: WIDE for k in DEFAULT_BUCKETS}), _fake_info,
          {"wait_for_identify": _wait_for_identify, "drive": _drive})


def _fake_info(fake) -> dict:
    return dict(token=fake.token, api_base=fake.api_base, gateway_url=fake.gateway_url)


async def _wait_for_identify(fake, timeout: float) -> None:
    await fake.wait_for_identify(timeout=timeout)


async def _drive(fake, events: int) -> float:
    """Dispatches `events` mentions; returns the seconds until each had its final answer with the
    Speak button."""
    mentions = [fake.message_create_mention(f"question {i}") for i in range(events)]
    asked = {m["id"] for m in mentions}
    done: set[str] = set()
    started = time.perf_counter()
    for m in mentions:
        await fake.dispatch("MESSAGE_CREATE", m)

    def answered() -> bool:
        for msg in list(fake.messages.values()):
            ref = (msg.get("message_reference") or {}).get("message_id")
            if ref in asked and msg["content"] == "Instant answer." and msg["components"]:
                if msg["components"][0]["components"][0].get("custom_id") == "confab:speak":
                    done.add(ref)
        return len(done) >= events

    while not answered():
        if time.perf_counter() - started > 300:
            raise TimeoutError(f"only {len(done)} of {events} answered in 300 s")
        await asyncio.sleep(0.05)
    return time.perf_counter() - started


# -- Confab's process ------------------------------------------------------------------------

async def measure(events: int = EVENTS) -> float:
    from bots.common.commands import Commands
    from bots.discord.adapter import DiscordAdapter
    from engine.runtime.engine import Engine
    from tests.bench.instant import load_instant
    from tests.bench.remote import RemoteFake
    from tests.conftest import discord_settings, make_settings

    remote = RemoteFake(_fake_process)
    fake = await remote.start()
    folder = scratch_dir("confab-bench-discord-")
    settings = make_settings(folder / "data", folder / "models", queue_max=events * 2, user_queue_max=events * 2,
                             concurrency=4)
    door = discord_settings(discord_bot_token=fake["token"], discord_api_url=fake["api_base"],
                            discord_gateway_url=fake["gateway_url"], discord_user_rate=0)
    engine = Engine(settings, load=load_instant, gpu_total=None)
    await engine.start(resume=False)
    adapter = DiscordAdapter(engine, Commands(engine), door, guild_ready_timeout=0.1, identify_delay=0.1)
    await adapter.start()
    try:
        await remote.call("wait_for_identify", 10)
        await adapter.wait_until_ready(10)
        elapsed = await remote.call("drive", events)
    finally:
        await adapter.stop()
        await engine.close()
        await remote.stop()
    return events / elapsed


def run() -> list[tuple[str, object, str]]:
    rate = asyncio.run(measure())
    return [("events/s, mentions answered end to end", rate,
             f"{EVENTS} mentions, instant chat model, fake in its own process, CONFAB_CONCURRENCY=4, "
             "CONFAB_DISCORD_USER_RATE=0; goal >= 300")]


def main() -> None:
    rate = asyncio.run(measure())
    print(f"discord adapter: {EVENTS} mentions answered end to end at {rate:.0f} events/s "
          f"(goal >= 300/s): {'ok' if rate >= 300 else 'BELOW GOAL'}")


if __name__ == "__main__":
    main()
