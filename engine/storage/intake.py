"""Events kept from before their acknowledgement until a job answers them.

A platform wants its event acknowledged at once (Slack within 3 s; a Discord interaction is
deferred), and the work comes after. So an adapter keeps the event in the store first
(`Engine.accept`), acknowledges it, and then answers it inside `Engine.answering(event, where)`:
every job submitted there (in that task and the tasks it starts) is stored with where its answer
goes, and the first one closes the event in the same transaction. An event answered without a job
(a refusal, /help) is closed by `Engine.settle`. After a kill, the adapter answers its platform's
open events again (`Engine.open_events`), since the platform never re-sends an acknowledged one;
the jobs already stored run again by themselves.
"""
from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass
class Intake:
    event: str
    where: dict = field(default_factory=dict)     # the adapter's reply record (bots/common/delivery.py)
    closed: bool = False                          # a job stored for it closed the event
    by_job: bool = True                           # False: only settle() closes it (a voice turn)


CURRENT: ContextVar[Intake | None] = ContextVar("confab_intake", default=None)
