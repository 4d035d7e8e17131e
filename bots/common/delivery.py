"""Idempotent delivery: the messages a job's answer went into are kept with the job.

A kill can land after an answer reached the platform but before the job was marked done. So an
adapter records where the answer goes, and the id of every message it posts for the job (Slack's
`ts`, Discord's message id) the moment the platform returns it. After a restart the job runs
again with no new event; the adapter's resume listener gets the record back and edits those
messages instead of posting a second answer.

    delivery = Delivery(engine.store, job_id, Where(channel, conversation, thread_ts=...))
    await delivery.save()                       # before the first post
    ts = (await client.chat_postMessage(...))["ts"]
    await delivery.posted(ts)                   # before anything else happens

    ...                                         # the final edit
    await delivery.delivered()                  # a restart now leaves the job alone

    delivery = Delivery.resumed(engine.store, handle.id, ref["reply_ref"])   # on resume
    delivery.messages                           # edit these; post only past their end

A job that was marked done before its final edit reached the platform (the kill landed after the
store's write) is handed to the adapter again on restart, finished, with its whole text.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

MESSAGES = "messages"


@dataclass
class Where:
    """Where a job's answer goes (its reply record): a door fills in what its platform needs.
    Stored as JSON with the keys the doors have always written."""
    channel: str = ""
    conversation: str = ""
    thread_ts: str | None = None      # Slack: the thread (None: the top of a DM)
    user: str = ""                    # Slack: whom a private word goes to
    reply_to: str = ""                # Discord: the message answered
    interaction: dict | None = None   # Discord: the interaction's follow-up webhook, while it lives
    delivered: bool = False           # the answer's final text reached the platform

    def to_record(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items()
                if k == "channel" or v not in ("", None, False)}

    @classmethod
    def of(cls, record: dict) -> "Where":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in names})


@dataclass
class Delivery:
    store: Any
    job_id: str
    where: Where = field(default_factory=Where)
    messages: list[str] = field(default_factory=list)

    @classmethod
    def resumed(cls, store, job_id: str, ref: str | dict | None) -> "Delivery":
        """The record written before a restart (a JSON string as the store keeps it)."""
        if isinstance(ref, str):
            try:
                ref = json.loads(ref or "{}")
            except ValueError:
                log.warning("the reply record of %s is not JSON; answering anew", job_id)
                ref = {}
        ref = dict(ref or {})
        messages = [str(m) for m in ref.pop(MESSAGES, None) or []]
        return cls(store, job_id, Where.of(ref), messages)

    def to_ref(self) -> str:
        return json.dumps({**self.where.to_record(), MESSAGES: list(self.messages)})

    async def save(self) -> None:
        try:
            await self.store.set_reply_ref(self.job_id, self.to_ref())
        except Exception:
            log.exception("could not record where %s answers", self.job_id)

    async def delivered(self) -> None:
        """Call when the answer's final text reached the platform: a restart leaves it alone."""
        self.where.delivered = True
        await self.save()

    async def posted(self, message_id: object) -> None:
        """Call as soon as the platform returns the id of a message posted for this job."""
        if message_id is None:
            return
        self.messages.append(str(message_id))
        await self.save()
