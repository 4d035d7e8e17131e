"""Slack adapter throughput: events per second handled end to end through the SlackFake
(event delivered -> acknowledged -> job stored, queued and run by the engine -> answer posted and
edited into place) by Confab's real adapter and engine, with a chat "model" that answers at once,
over Socket Mode and over signed HTTP. Goal: >= 300 events/s on this machine.

The fake runs in a process of its own (tests/bench/remote.py): it plays Slack, whose work is not
Confab's. It sends the events, waits for every answer and times the run.

Run: `python -m tests.bench.bench_slack` (or `make bench`).
"""
from __future__ import annotations

import asyncio
import time

from tests.scratch import scratch_dir

EVENTS = 600
WINDOW = 32


# -- the fake's process ----------------------------------------------------------------------

def _fake_process(conn) -> None:
    from tests.bench.remote import serve
    from tests.fakes.slack import SlackFake
    serve(conn, lambda: SlackFake(echo_bot_messages=False), _fake_info,
          {"wait_connected": _wait_connected, "drive": _drive})


def _fake_info(fake) -> dict:
    return dict(bot_token=fake.bot_token, app_token=fake.app_token, api_url=fake.api_url,
                signing_secret=fake.signing_secret)


async def _wait_connected(fake, count: int, timeout: float) -> None:
    await fake.wait_connected(count, timeout=timeout)


async def _drive(fake, mode: str, url: str | None, events: int, window: int) -> tuple[float, list[str]]:
    """Sends `events` DMs (at most `window` unacknowledged at once, as a busy workspace does) and
    returns the seconds until every one was answered, and the fake's problems."""
    import aiohttp
    dm = fake.im_with("U2")
    batch = [fake.im_event(f"question {i}", user="U2") for i in range(events)]
    sem = asyncio.Semaphore(window)
    t0 = time.perf_counter()
    if mode == "socket":
        async def send(e):
            async with sem:
                await fake.wait_ack(await fake.send_event(e), 30)
        await asyncio.gather(*(send(e) for e in batch))
    else:
        async with aiohttp.ClientSession() as s:
            async def post(e):
                body = fake.event_callback_body(e)
                async with sem, s.post(url, data=body, headers={
                        "Content-Type": fake.JSON, **fake.sign_headers(body)}) as r:
                    assert r.status == 200
            await asyncio.gather(*(post(e) for e in batch))
    await fake.wait_until(
        lambda: fake.count_bot_messages(dm, lambda m: "Instant answer." in (m.get("text") or "")) >= events,
        120, "every answer")
    return time.perf_counter() - t0, list(fake.problems)


# -- Confab's process ------------------------------------------------------------------------

class _FakeHandle:
    """What running_confab reads of a SlackFake, for one in another process."""

    def __init__(self, remote, info: dict):
        self._remote = remote
        self.__dict__.update(info)
        self.request_url = None

    async def wait_connected(self, count: int = 1, timeout: float = 10) -> None:
        await self._remote.call("wait_connected", count, timeout)


async def measure(mode: str, events: int = EVENTS) -> tuple[float, int, int, float]:
    from engine import Engine
    from tests.bench.instant import load_instant
    from tests.bench.remote import RemoteFake
    from tests.bots.slack.conftest import running_confab
    from tests.conftest import make_settings

    remote = RemoteFake(_fake_process)
    fake = _FakeHandle(remote, await remote.start())
    settings = make_settings(scratch_dir("confab-bench-slack-"), queue_max=events * 2,
                             user_queue_max=events * 2, concurrency=4)
    engine = Engine(settings, load=load_instant, gpu_total=None)
    await engine.start(resume=False)
    try:
        async with running_confab(fake, mode, engine, check_acks=False) as confab:
            elapsed, problems = await remote.call("drive", mode, confab.url, events, WINDOW)
            late = [p for p in problems if "acknowledged" in p]
            assert len(late) == len(problems), problems[:3]
            # Slack's 3 s as Confab measures it (receipt to ack), beside the fake's view of the wire
            acks = sorted(a.seconds for a in confab.adapter.acks.since(0))
            late_here = sum(s >= 3.0 for s in acks)
            p95 = acks[min(len(acks) - 1, int(0.95 * len(acks)))] if acks else float("nan")
            return events / elapsed, len(late), late_here, p95
    finally:
        await engine.close()
        await remote.stop()


def run() -> list[tuple[str, object, str]]:
    rows: list[tuple[str, object, str]] = []
    for mode in ("socket", "http"):
        rate, late, late_here, p95 = asyncio.run(measure(mode))
        rows.append((f"events/s, DMs answered end to end, {mode}", rate,
                     f"{EVENTS} DMs, {WINDOW} in flight, instant chat model, fake in its own "
                     f"process, CONFAB_CONCURRENCY=4; goal >= 300; acks later than 3 s: {late} as the "
                     f"fake saw them, {late_here} from receipt to ack inside Confab"))
        rows.append((f"ack p95 ms, receipt to ack inside Confab, {mode}", p95 * 1000,
                     f"the same run: Slack allows 3,000 ms; {WINDOW} envelopes in flight"))
    return rows


def main() -> None:
    for name, rate, note in run():
        print(f"slack {name}: {rate:6.0f} ({note})")


if __name__ == "__main__":
    main()
