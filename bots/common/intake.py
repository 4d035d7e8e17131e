"""One intake for every door: keep -> acknowledge -> answer -> settle -> guard -> replay after a
restart -> resume, written once.

A platform wants its event acknowledged at once (Slack within 3 s; a Discord interaction is
deferred), and the work comes after. So a door keeps the event in the store first, as a typed
record of its kind (`Kept`), acknowledges it, and answers it inside the engine's `answering`
(every job submitted there is stored with where its answer goes, `delivery.Where`); an answer without a
job (a refusal, /help) settles the event. `guard` is the one place where a failure becomes words
for the person. After a restart, `replay` answers the events no job had taken up (the platform
never sends an acknowledged one again) and `resume` sends the jobs that were running to where
their answers went, by the same rules for every door.

A door supplies only what is its own: how to acknowledge, the typed records of its events, how
to post (`reply_for`), how to find what it posted before a restart (`earlier`), and the words
for its platform's own failures (`refused`).
"""
from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import time
from typing import Any, Awaitable, Callable, ClassVar, Iterable, Protocol, TypeVar

from bots.common.delivery import Delivery, Where
from bots.common.image_commands import deliver
from bots.common.render import tokens_of
from bots.common.reply import Reply
from bots.common.words import RESTARTED_MID_WAY
from engine import ConfabError
from engine.messages import explain

log = logging.getLogger(__name__)

MAX_TASKS = 1000
CHAINED = ("transcribe", "speak", "ocr")     # a voice note's or an image question's first stage
STREAMED = ("chat", "vision")

K = TypeVar("K", bound="Kept")


class Kept:
    """The typed record of an event kept before its acknowledgement; `kind` names it in the
    store (the record is the dataclass's fields and its kind, as JSON)."""
    kind: ClassVar[str]

    def to_record(self) -> dict:
        return {"kind": self.kind, **dataclasses.asdict(self)}

    @classmethod
    def of(cls: type[K], record: dict) -> K:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in names})


def kept_of(record: dict, kinds: Iterable[type[Kept]]) -> Kept | None:
    """The typed record of a stored one; None for a kind this door no longer keeps."""
    for cls in kinds:
        if record.get("kind") == cls.kind:
            return cls.of(record)
    return None


class DoorReply(Reply, Protocol):
    """A door's reply as the intake uses it: it knows where it answers, and after a restart it
    edits the messages posted before instead of posting a second answer."""
    earlier: list

    def where(self) -> Where:
        """Where the answer goes, kept with every job submitted for it."""


class Door(Protocol):
    """What a door gives the intake: its own parts only."""

    def reply_for(self, where: Where) -> DoorReply:
        """A reply to where a job accepted before a restart answers."""

    async def earlier(self, reply: DoorReply, delivery: Delivery) -> list:
        """The messages posted for the job before the restart, as the reply edits them."""

    def refused(self, error: Exception) -> str | None:
        """Words for a failure of the platform's own (logged here), or None."""


class Cancelled(enum.Enum):
    FINISHED = "finished"       # nothing of it waits or runs
    NOT_YOURS = "not yours"     # neither the asker nor an admin
    CANCELLED = "cancelled"


class Intake:
    def __init__(self, engine, platform: str, door: Door):
        self.engine, self.platform, self.door = engine, platform, door
        self.tasks: set[asyncio.Task] = set()
        self.pipelines: dict[str, Any] = {}        # first stage's job id -> running voice note
        self.listening_since = time.time()         # events kept before this came from an earlier run

    # -- the work after an acknowledgement ----------------------------------------------------

    def spawn(self, work: Awaitable[None]) -> asyncio.Task:
        """Run work after the ack; kept so that stop() can wait for it."""
        if len(self.tasks) >= MAX_TASKS:
            log.warning("%d %s tasks in flight; still accepting, the engine's queue limits apply",
                        len(self.tasks), self.platform)
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a %s task failed", self.platform, exc_info=task.exception())

    async def stop(self, grace_s: float = 0.0) -> None:
        if self.tasks and grace_s > 0:
            await asyncio.wait(set(self.tasks), timeout=grace_s)
        for task in list(self.tasks):
            task.cancel()

    # -- keep, acknowledge, answer, settle ----------------------------------------------------

    async def keep(self, key: str, event: Kept) -> bool:
        """Keep an event before its acknowledgement; False when it was kept before."""
        return await self.engine.accept(self.platform, key, event.to_record())

    async def keep_then_ack(self, key: str, event: Kept, ack: Callable[[], Awaitable[Any]]) -> bool:
        kept = await self.keep(key, event)
        await ack()
        return kept

    async def answer(self, key: str, reply: DoorReply, work: Awaitable[None]) -> None:
        """Answer a kept event: its jobs carry where the reply answers; settled when done (not
        when cancelled at shutdown: replayed then)."""
        with self.engine.answering(key, reply.where().to_record()) as intake:
            await self.guard(reply, work)
        await self.engine.settle(intake)

    async def answer_quietly(self, key: str, work: Awaitable[None]) -> None:
        """A support desk's question: no reply record for its jobs (after a restart the desk asks
        again from the kept question), and a failure goes to the log only."""
        await self.quietly(work)
        await self.engine.settle(key)

    # -- guard ---------------------------------------------------------------------------------

    async def guard(self, reply: Reply, work: Awaitable[None]) -> None:
        """The one place where a failure becomes words for the person; never kills the door."""
        try:
            await work
        except ConfabError as e:
            await self.say_safely(reply, explain(e))
        except asyncio.CancelledError:
            raise
        except Exception as e:
            words = self.door.refused(e)
            if words is None:
                log.exception("answering on %s failed", self.platform)
                words = explain(e)
            await self.say_safely(reply, words)

    async def quietly(self, work: Awaitable[None]) -> None:
        """Support-channel work: a failure goes to the log only (the desk never speaks unasked)."""
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("support channel on %s", self.platform)

    async def say_safely(self, reply: Reply, text: str) -> None:
        try:
            await reply.say(text)
        except Exception as e:
            log.warning("could not tell the person about an error either: %s", e)

    # -- cancel --------------------------------------------------------------------------------

    async def cancel(self, job_id: str, user_key: str, is_admin: Callable[[], Awaitable[bool]]) -> Cancelled:
        """A Cancel button: the job, or the whole voice note it starts, if the one who clicked
        asked for it or is an admin."""
        note = self.pipelines.get(job_id)
        if note is not None and note.done:
            note = None
        handle = self.engine.handle(job_id)
        if note is None and (handle is None or handle.done):
            return Cancelled.FINISHED
        origin = note.origin if note is not None else handle.job.origin
        if origin.user_key != user_key and not await is_admin():
            return Cancelled.NOT_YOURS
        await (note.cancel() if note is not None else handle.cancel())
        return Cancelled.CANCELLED

    # -- after a restart -----------------------------------------------------------------------

    async def replay(self, answer_again: Callable[[str, dict], Awaitable[None]]) -> int:
        """Answer the events kept before a restart that no job had taken up yet (each by
        `answer_again(key, record)`, which settles what it no longer answers); how many."""
        events = await self.engine.open_events(self.platform, before=self.listening_since)
        for key, record in events:
            self.spawn(answer_again(key, record))
        log.info("%s: answering %d requests received before the restart", self.platform.capitalize(),
                 len(events))
        return len(events)

    async def resume(self, handle, ref: dict) -> None:
        """A job accepted before a restart runs again: its answer goes where it would have, into
        the messages posted for it then (never a second answer)."""
        delivery = Delivery.resumed(self.engine.store, handle.id, ref.get("reply_ref"))
        where = delivery.where
        kind = handle.job.kind
        if not where.channel:
            # its answer goes nowhere (a support desk's job: the desk asks again from its kept
            # question); running it would only keep the model busy
            if not handle.done:
                await handle.cancel()
            return
        if kind not in CHAINED + STREAMED + ("image",):
            return
        reply = self.door.reply_for(where)
        if kind in CHAINED:
            # what chained the stages is gone
            await handle.cancel()
            await self.say_safely(reply, RESTARTED_MID_WAY)
            return
        self.spawn(self.guard(reply, self._finish(handle, reply, delivery, where)))

    async def _finish(self, handle, reply: DoorReply, delivery: Delivery, where: Where) -> None:
        if handle.job.kind == "image":
            result = await handle.result()
            await deliver(reply, await reply.say(f"🎨 “{result.prompt}” ({handle.id})"), result)
            return
        reply.earlier = await self.door.earlier(reply, delivery)
        text = await reply.stream(tokens_of(handle), status=f"queued ({handle.id})")
        result = await handle.result()
        messages = getattr(handle.job, "messages", None)
        if where.conversation and messages:
            await self.engine.remember_exchange(where.conversation, messages[-1].content,
                                                getattr(result, "text", text))
