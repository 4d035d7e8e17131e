"""Slack adapter throughput: events per second handled end to end through the SlackFake
(event delivered -> acknowledged -> Request -> answer posted with chat.postMessage) by Confab's
real adapter, with an instant engine (an /ask that answers at once), over Socket Mode and over
signed HTTP. Goal: >= 300 events/s on this machine.

Run: `python -m tests.bench.bench_slack` (or `make bench`).
"""
from __future__ import annotations

import asyncio
import tempfile
import time

import aiohttp

from bots.common.commands import Commands
from engine import Engine, Settings
from tests.bots.slack.conftest import running_confab
from tests.fakes.slack import SlackFake

EVENTS = 600
WINDOW = 32


async def instant_ask(cmds, request, arg, reply) -> None:
    await reply.say(f"ok: {arg[:20]}")


async def run(mode: str) -> tuple[float, int]:
    fake = SlackFake(echo_bot_messages=False)
    await fake.start()
    engine = Engine(Settings.from_env(env={}, dotenv=None, data_dir=tempfile.mkdtemp()))
    await engine.start(resume=False)
    try:
        async with running_confab(fake, mode, engine) as confab:
            confab.adapter.commands.register("ask", instant_ask)
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
            await fake.wait_until(lambda: len(fake.calls_to("chat.postMessage")) >= EVENTS, 120, "every answer")
            elapsed = time.perf_counter() - t0
            late = [p for p in fake.problems if "acknowledged" in p]
            assert len(late) == len(fake.problems), fake.problems[:3]
            return EVENTS / elapsed, len(late)
    finally:
        await engine.close()
        await fake.stop()


def main() -> None:
    for mode in ("socket", "http"):
        rate, late = asyncio.run(run(mode))
        print(f"slack {mode:<6}: {rate:6.0f} events/s end to end ({EVENTS} DMs, {WINDOW} in flight, "
              f"instant engine; goal >= 300); {late} acks later than 3 s")


if __name__ == "__main__":
    main()
