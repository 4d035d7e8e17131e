"""Slack adapter throughput: events per second handled end to end through the SlackFake
(event delivered -> acknowledged -> job stored, queued and run by the engine -> answer posted and
edited into place) by Confab's real adapter and engine, with a chat "model" that answers at once,
over Socket Mode and over signed HTTP. Goal: >= 300 events/s on this machine.

Run: `python -m tests.bench.bench_slack` (or `make bench`).
"""
from __future__ import annotations

import asyncio
import tempfile
import time

import aiohttp

from engine import Engine
from tests.bench.instant import load_instant
from tests.bots.slack.conftest import running_confab
from tests.conftest import make_settings
from tests.fakes.slack import SlackFake

EVENTS = 600
WINDOW = 32


async def measure(mode: str) -> tuple[float, int]:
    fake = SlackFake(echo_bot_messages=False)
    await fake.start()
    settings = make_settings(tempfile.mkdtemp(prefix="confab-bench-slack-"), queue_max=EVENTS * 2,
                             user_queue_max=EVENTS * 2, concurrency=4)
    engine = Engine(settings, load=load_instant, gpu_total=None)
    await engine.start(resume=False)
    try:
        async with running_confab(fake, mode, engine) as confab:
            dm = fake.im_with("U2")
            events = [fake.im_event(f"question {i}", user="U2") for i in range(EVENTS)]
            t0 = time.perf_counter()
            if mode == "socket":   # at most WINDOW unacknowledged at once, as a busy workspace sends
                sem = asyncio.Semaphore(WINDOW)

                async def send(e):
                    async with sem:
                        await fake.wait_ack(await fake.send_event(e), 30)
                await asyncio.gather(*(send(e) for e in events))
            else:
                async with aiohttp.ClientSession() as s:
                    sem = asyncio.Semaphore(WINDOW)

                    async def post(e):
                        body = fake.event_callback_body(e)
                        async with sem, s.post(confab.url, data=body, headers={
                                "Content-Type": fake.JSON, **fake.sign_headers(body)}) as r:
                            assert r.status == 200
                    await asyncio.gather(*(post(e) for e in events))
            await fake.wait_until(
                lambda: fake.count_bot_messages(dm, lambda m: "Instant answer." in (m.get("text") or "")) >= EVENTS,
                120, "every answer")
            elapsed = time.perf_counter() - t0
            late = [p for p in fake.problems if "acknowledged" in p]
            assert len(late) == len(fake.problems), fake.problems[:3]
            return EVENTS / elapsed, len(late)
    finally:
        await engine.close()
        await fake.stop()


def run() -> list[tuple[str, object, str]]:
    rows: list[tuple[str, object, str]] = []
    for mode in ("socket", "http"):
        rate, late = asyncio.run(measure(mode))
        rows.append((f"events/s, DMs answered end to end, {mode}", rate,
                     f"{EVENTS} DMs, {WINDOW} in flight, instant chat model; goal >= 300; "
                     f"{late} acks later than 3 s"))
    return rows


def main() -> None:
    for mode in ("socket", "http"):
        rate, late = asyncio.run(measure(mode))
        print(f"slack {mode:<6}: {rate:6.0f} events/s end to end ({EVENTS} DMs, {WINDOW} in flight, "
              f"instant engine; goal >= 300); {late} acks later than 3 s")


if __name__ == "__main__":
    main()
