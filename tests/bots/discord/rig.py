"""The rig the Discord end-to-end modules share: the loopback fake of Discord, the real engine
with SmolLM2 (warmed up before the clock matters) and the adapter, pointed at the fake only
through its own settings (CONFAB_DISCORD_API_URL / _GATEWAY_URL). One rig per module; each test
starts its own conversation. Every wait is bounded."""
from __future__ import annotations

import asyncio
import contextlib
from typing import Awaitable, Callable, Iterable

from bots.common.commands import Commands
from bots.discord.adapter import DiscordAdapter
from engine import ChatJob, ChatMessage
from engine.runtime.engine import Engine
from tests.conftest import discord_settings, make_settings
from tests.fakes.discord import DiscordFake

T = 60          # seconds: the bound of every wait on one short answer (CI machines are shared)
# Discord's rule: an interaction's first response within 3 s. It is checked on Confab's own clock
# (bots/common/acks.py: from parsing the interaction off the gateway to Discord's answer to the
# response), as Discord counts it; the fake, in this same busy process, only refuses a response
# later than WIRE_S, a bound on a hang.
ACK_S = 3.0
WIRE_S = 30.0
PLACEHOLDER = "⏳ …"
# Short answers keep the suite fast: SmolLM2 rambles up to max_tokens. One thread, because
# llama.cpp's threads wait for each other at every layer, and on a busy 2-core machine a second
# thread made generation about six times slower, not faster.
ANSWER_TOKENS = 24
LONG_TOKENS = 700       # the tests that need a long answer (splitting, a job to cancel) ask for it


class Rig:
    def __init__(self, fake: DiscordFake, engine: Engine, adapter: DiscordAdapter):
        self.fake, self.engine, self.adapter = fake, engine, adapter

    def components(self, message_id: str) -> list[str]:
        msg = self.fake.messages.get(str(message_id), {})
        return [c.get("custom_id", "") for row in msg.get("components", []) for c in row.get("components", [])]

    async def until(self, predicate, what: str, timeout: float = T):
        async def poll():
            while True:
                value = predicate()
                if value:
                    return value
                await asyncio.sleep(0.05)
        try:
            return await asyncio.wait_for(poll(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; "
                                 f"recent requests: {self.fake.requests[-8:]}") from None

    async def acked(self, payload: dict):
        """The interaction's first response as the fake received it, once Confab's own clock says
        it went back within Discord's 3 s."""
        cb = await self.fake.wait_for("POST", f"/interactions/{payload['id']}/", timeout=WIRE_S)
        ack = await self.until(lambda: self.adapter.acks.of(str(payload["id"])), "Confab's note of the ack")
        assert ack.seconds < ACK_S, f"acknowledged {ack.seconds:.2f}s after Confab received it"
        return cb

    def late_acks(self) -> list:
        """Every interaction this adapter acknowledged past Discord's 3 s."""
        return [a for a in self.adapter.acks.acks if a.seconds >= ACK_S]

    async def handled(self, timeout: float = T) -> None:
        """Evidence that the client has done with everything dispatched so far, instead of a
        pause to see whether anything more is posted: asked for a heartbeat at once (op 1), it
        reports the last sequence it read, so every earlier event was parsed and its handler
        started; then no discord.py event handler, adapter task or engine job is still going."""
        from tests.fakes.discord.gateway import OP_HEARTBEAT
        seq, start = self.fake._session.seq, len(self.fake.gateway_received)
        await self.fake.send_heartbeat_request()
        await self.fake.wait_for_gateway(OP_HEARTBEAT, lambda d: d is not None and d >= seq, timeout, start)

        def busy() -> list:
            handlers = [t for t in asyncio.all_tasks()
                        if t.get_name().startswith("discord.py: on_") and not t.done()]
            return handlers + list(self.adapter._tasks) + self.engine.active_jobs()
        await self.until(lambda: not busy(), "the events handled", timeout)

    async def answered(self, reply_id: str, timeout: float = T) -> dict:
        """The bot's message `reply_id` once its answer is complete (the Speak button is on)."""
        await self.until(lambda: "confab:speak" in self.components(reply_id)
                         or (self.fake.messages.get(reply_id, {}).get("content", PLACEHOLDER) != PLACEHOLDER
                             and not self.components(reply_id)), f"the answer in {reply_id}", timeout)
        return self.fake.messages[reply_id]

    async def bot_reply_to(self, message_id: str, timeout: float = T) -> dict:
        """The bot's first message replying to `message_id`."""
        req = await self.fake.wait_for(
            "POST", "/messages", lambda r: r.status == 200 and str((r.json or {}).get("message_reference", {})
                                                                 .get("message_id")) == str(message_id),
            timeout=timeout)
        return req.response

    def jobs(self, kind: str = "chat"):
        return [h for h in self.engine._handles.values() if h.job.kind == kind]

    @contextlib.asynccontextmanager
    async def long_answers(self, tokens: int = LONG_TOKENS):
        """Answers of up to `tokens` while inside; the jobs started then end before it is left."""
        settings = self.engine.settings
        before = set(self.engine._handles)
        self.engine.settings = settings.replace(max_tokens=tokens)
        try:
            yield
        finally:
            for handle in [h for i, h in self.engine._handles.items() if i not in before and not h.done]:
                await handle.cancel()
                with contextlib.suppress(Exception, asyncio.TimeoutError):
                    await asyncio.wait_for(handle.result(), 30)
            self.engine.settings = settings



async def restart_adapter(rig: Rig, meanwhile: Callable[[], None] = lambda: None) -> None:
    """Stop the rig's adapter, cutting off what it was doing (as a kill would, for what is in
    the store), call `meanwhile`, and start another on the same engine; once ready it answers
    what was kept before (engine/storage/intake.py)."""
    old = rig.adapter
    await old.stop()
    meanwhile()
    rig.adapter = DiscordAdapter(rig.engine, old.commands, old.settings, guild_ready_timeout=0.1, identify_delay=0.1,
                                 desk=old.desk, escalate_every_s=old.escalate_every_s)
    await rig.adapter.start()
    await rig.fake.wait_for_identify(rig.fake.identify_count + 1, timeout=10)
    await rig.adapter.wait_until_ready(10)


@contextlib.asynccontextmanager
async def running_rig(data_dir, models_dir, register: Iterable[Callable[[Commands], None]] = (),
                      prepare: Callable[[Engine], None] | None = None,
                      desk: Callable[[Engine, DiscordFake], Awaitable[object]] | None = None,
                      escalate_every_s: float = 60.0, **settings):
    """A started fake, engine and adapter; `register` adds command sets (as `confab run` does),
    `prepare` sees the engine before it starts (to register a model folder), `desk` makes the
    support desk once the engine runs (support channels)."""
    fake = DiscordFake(interaction_ack_deadline=WIRE_S)     # the 3 s rule: Rig.acked
    await fake.start()
    door = discord_settings(discord_bot_token=fake.token, discord_api_url=fake.api_base,
                            discord_gateway_url=fake.gateway_url, discord_user_rate=0)
    settings = make_settings(data_dir, models_dir, context_tokens=2048,
                             max_tokens=ANSWER_TOKENS, threads=1,
                             voice_max_tokens=ANSWER_TOKENS, history_messages=6,
                             system_prompt="You are a helpful assistant.", **settings)
    engine = Engine(settings, gpu_total=None)
    adapter = rig = None
    try:
        if prepare is not None:
            prepare(engine)
        await engine.start()
        warm = await engine.submit(ChatJob(messages=[ChatMessage("user", "Hi")], max_tokens=2))
        await asyncio.wait_for(warm.result(), 120)     # load the model before the clock matters
        commands = Commands(engine)
        for add in register:
            add(commands)
        support_desk = await desk(engine, fake) if desk is not None else None
        adapter = DiscordAdapter(engine, commands, door, guild_ready_timeout=0.1, identify_delay=0.1,
                                 desk=support_desk, escalate_every_s=escalate_every_s)
        await adapter.start()
        await fake.wait_for_identify(timeout=10)
        await adapter.wait_until_ready(10)
        rig = Rig(fake, engine, adapter)
        yield rig
        assert not rig.late_acks(), rig.late_acks()
    finally:
        if rig is not None:
            adapter = rig.adapter       # another one, after `restart_adapter`
        for handle in engine.active_jobs():     # let no worker thread run into a closed model
            await handle.cancel()
        for handle in list(engine.active_jobs()):
            with contextlib.suppress(Exception, asyncio.TimeoutError):
                await asyncio.wait_for(handle.result(), 30)
        if adapter is not None:
            await adapter.stop()
        await engine.close()
        await fake.stop()
