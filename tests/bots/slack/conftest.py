"""Confab's real Slack adapter and real engine (SmolLM2) against the loopback SlackFake, over
Socket Mode and over signed HTTP. Every wait is bounded."""
from __future__ import annotations

import asyncio
import contextlib
import sqlite3

import pytest
import pytest_asyncio
from aiohttp import web

import bots.slack
from bots.api.app import create_app
from bots.common.commands import Commands
from bots.slack.settings import SlackSettings
from engine import ChatJob, ChatMessage, Engine, Settings
from tests.conftest import slack_settings
from tests.fakes.slack import SlackFake

# Slack's rule: an envelope or request is acknowledged within 3 s. It is checked on Confab's own
# clock (bots/common/acks.py: from reading it off the wire to sending the ack), as Slack counts
# it; the test's view of the wire (the fake in this same busy process) only has to see the ack
# come before WIRE_S, a bound on a hang.
ACK_S = 3.0
WIRE_S = 30.0


class Confab:
    """One running Confab wired to one SlackFake."""

    def __init__(self, fake: SlackFake, engine: Engine, running, mode: str, url: str | None):
        self.fake, self.engine, self.running, self.mode, self.url = fake, engine, running, mode, url
        self._jobs_before = len(self._all_jobs())

    @property
    def adapter(self):
        return self.running.adapter

    # -- delivering, with the 3 s ack checked ------------------------------------------------

    async def _acked(self, key: str | None, before: int) -> float:
        """Seconds from receipt to ack, as Confab measured them, for the envelope `key` (Socket
        Mode) or for the request just answered (HTTP: whatever Confab acked since `before`)."""
        acks = self.adapter.acks

        async def noted():
            while not (acks.of(key) if key else acks.since(before)):
                await asyncio.sleep(0.01)
        await asyncio.wait_for(noted(), WIRE_S)
        took = acks.of(key).seconds if key else max(a.seconds for a in acks.since(before))
        assert took < ACK_S, f"acknowledged {took:.2f}s after Confab received it (Slack allows {ACK_S}s)"
        return took

    async def deliver(self, event: dict) -> float:
        before = self.adapter.acks.count
        if self.mode == "socket":
            eid = await self.fake.send_event(event)
            await self.fake.wait_ack(eid, WIRE_S)
            return await self._acked(eid, before)
        status, _ = await self.fake.signed_post(self.url, self.fake.event_callback_body(event),
                                                self.fake.JSON, timeout=WIRE_S)
        assert status == 200
        return await self._acked(None, before)

    async def mention(self, text: str, **kw) -> dict:
        mention, message = self.fake.mention_pair(f"<@{self.fake.bot_user_id}> {text}", **kw)
        await self.deliver(message)      # Slack sends both; the message often first
        await self.deliver(mention)
        return mention

    async def slash(self, command: str, text: str = "", **kw) -> float:
        """Sends a slash command; returns the seconds from receipt to ack inside Confab."""
        before = self.adapter.acks.count
        if self.mode == "socket":
            eid = await self.fake.send_slash_command(command, text, **kw)
            await self.fake.wait_ack(eid, WIRE_S)
            return await self._acked(eid, before)
        status, _ = await self.fake.signed_post(self.url, self.fake.slash_command_body(command, text, **kw),
                                                self.fake.FORM, timeout=WIRE_S)
        assert status == 200
        return await self._acked(None, before)

    async def click(self, action_id: str, value: str, **kw) -> float:
        before = self.adapter.acks.count
        if self.mode == "socket":
            eid = await self.fake.send_block_action(action_id, value, **kw)
            await self.fake.wait_ack(eid, WIRE_S)
            return await self._acked(eid, before)
        status, _ = await self.fake.signed_post(self.url, self.fake.block_actions_body(action_id, value, **kw),
                                                self.fake.FORM, timeout=WIRE_S)
        assert status == 200
        return await self._acked(None, before)

    def late_acks(self) -> list:
        """Every acknowledgement this Confab sent (the fake's echoes too) past Slack's 3 s."""
        return [a for a in self.adapter.acks.acks if a.seconds >= ACK_S]

    def kept(self, key: str) -> tuple[str, str | None] | None:
        """(status, job id) of an event kept in the store before its ack; None if never kept."""
        db = sqlite3.connect(self.engine.settings.data_path / "confab.db")
        try:
            row = db.execute("SELECT status, job_id FROM events WHERE id = ?", (key,)).fetchone()
        finally:
            db.close()
        return tuple(row) if row else None

    # -- waiting for answers -----------------------------------------------------------------

    def is_answer(self, m: dict, parent: str | None = None) -> bool:
        text = m.get("text", "")
        return (m.get("bot_id") == self.fake.bot_id and m["ts"] != parent and not m.get("blocks")
                and "▌" not in text and not text.startswith(("⏳", "✍️", "🎧", "…"))
                and "asked:" not in text)

    async def answer(self, channel: str, thread_ts: str | None, timeout: float = 120) -> dict:
        if thread_ts is None:   # the top of a DM
            return await self.fake.wait_until(
                lambda: next((m for m in reversed(self.fake.messages(channel, top_level_only=True))
                              if self.is_answer(m)), None), timeout, "an answer")
        return await self.fake.wait_message(channel, lambda m: self.is_answer(m, thread_ts),
                                            thread_ts=thread_ts, timeout=timeout)

    async def idle(self, timeout: float = 120) -> None:
        """Until no Slack task is in flight and the engine has nothing queued or running."""
        async def loop():
            while self.adapter._tasks or self.engine.active_jobs():
                await asyncio.sleep(0.05)
        try:
            await asyncio.wait_for(loop(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"still busy after {timeout}s: tasks {self.adapter._tasks}, jobs "
                                 f"{[(h.id, h.status) for h in self.engine.active_jobs()]}") from None

    async def settled(self, key: str, delivered: bool = True, timeout: float = 120) -> str:
        """Evidence that the work of a kept event is over, instead of a pause to see whether
        more is posted: the event closed by a job, that job finished (its reply record saying
        the final edit reached Slack, when `delivered`), and nothing left in flight. A twin or
        redelivered event was dropped before its ack (kept once, by id). The job's id."""
        import json

        def state():
            db = sqlite3.connect(self.engine.settings.data_path / "confab.db")
            try:
                return db.execute("SELECT e.status, j.id, j.status, j.reply_ref FROM events e"
                                  " LEFT JOIN jobs j ON j.id = e.job_id WHERE e.id = ?", (key,)).fetchone()
            finally:
                db.close()

        def over(row) -> bool:
            if not row or row[0] != "closed" or row[2] not in ("done", "failed", "cancelled"):
                return False
            return not delivered or bool(json.loads(row[3] or "{}").get("delivered"))

        async def loop():
            while not over(state()):
                await asyncio.sleep(0.05)
        try:
            await asyncio.wait_for(loop(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"{key} not settled after {timeout}s: {state()}") from None
        await self.idle(timeout)
        return state()[1]

    def jobs(self) -> list[dict]:
        """The jobs this Confab submitted (the engine is shared by the module's tests)."""
        return self._all_jobs()[self._jobs_before:]

    def _all_jobs(self) -> list[dict]:
        import json
        db = sqlite3.connect(self.engine.settings.data_path / "confab.db")
        try:
            return [json.loads(p) for (p,) in db.execute("SELECT payload FROM jobs ORDER BY created")]
        finally:
            db.close()


def engine_settings(data_dir, models_dir) -> Settings:
    # One thread: this test machine is shared, and llama.cpp's spinning threads slow down badly
    # when cores are oversubscribed. Short answers (voice notes' too) keep the suite fast and
    # its timings stable on a busy machine. One chat slot: the queue and cancel tests hold the
    # model with one long job to watch the next one wait (several slots are tested in
    # tests/engine/test_runner.py and tests/api/test_chat_engine_api.py).
    return Settings.from_env(env={}, dotenv=None, data_dir=str(data_dir), models_dir=str(models_dir),
                             max_tokens=24, voice_max_tokens=24, threads=1, chat_slots=1)


def commands_for(engine: Engine) -> Commands:
    """The shared command set with the image commands, as `confab serve` builds it."""
    commands = Commands(engine)
    try:
        from bots.common import image_commands
    except ImportError:      # the images extra is not installed: /imagine says so
        return commands
    image_commands.register_commands(commands)
    return commands


def settings_for(fake: SlackFake, mode: str, engine: Engine, **overrides) -> SlackSettings:
    values = dict(slack_bot_token=fake.bot_token, slack_api_url=fake.api_url, slack_user_rate=0)
    if mode == "socket":
        values["slack_app_token"] = fake.app_token          # no signing secret needed
    else:
        values["slack_signing_secret"] = fake.signing_secret
    values.update(overrides)
    return slack_settings(**values)


@contextlib.asynccontextmanager
async def running_confab(fake: SlackFake, mode: str, engine: Engine, desk=None, check_acks: bool = True,
                         **overrides):
    """A Confab on `fake`; on leaving, every ack it sent must have been within Slack's 3 s
    (`check_acks`; a benchmark counts them instead)."""
    app = create_app(engine)
    running = None
    runner = None
    try:
        running = await bots.slack.start(engine, commands_for(engine), app,
                                         settings_for(fake, mode, engine, **overrides), desk)
        url = None
        if mode == "http":
            runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/slack/events"
            fake.request_url = url
        else:
            await fake.wait_connected(1, timeout=10)
        confab = Confab(fake, engine, running, mode, url)
        yield confab
        if check_acks:
            assert not confab.late_acks(), confab.late_acks()
    finally:
        fake.request_url = None
        if running is not None:
            await asyncio.wait_for(running.stop(), 15)
        if runner is not None:
            await runner.cleanup()


@contextlib.asynccontextmanager
async def warmed_engine(settings: Settings):
    """An engine with the real chat model loaded and warmed: the first evaluation after a load is
    slow (tens of seconds on a busy machine), paid here once rather than inside a test's waits."""
    e = Engine(settings)
    await e.start()
    warm = await e.submit(ChatJob(max_tokens=1, messages=[ChatMessage("user", "Hi")]))
    await asyncio.wait_for(warm.result(), 240)
    try:
        yield e
    finally:
        await e.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine(tmp_path_factory, shared_models_dir):
    """One engine with the real SmolLM2 for the module."""
    async with warmed_engine(engine_settings(tmp_path_factory.mktemp("confab"), shared_models_dir)) as e:
        yield e


@pytest_asyncio.fixture(loop_scope="module")
async def fake():
    f = SlackFake(ack_deadline=WIRE_S)      # the 3 s rule is checked on Confab's clock (above)
    await f.start()
    try:
        yield f
    finally:
        await f.stop()


@pytest.fixture(params=["socket", "http"])
def mode(request) -> str:
    return request.param


@pytest_asyncio.fixture(loop_scope="module")
async def confab(fake, mode, engine):
    async with running_confab(fake, mode, engine) as c:
        yield c
        await c.idle()
    assert not fake.problems, fake.problems
