"""The intake every door shares (bots/common/intake.py): the records it keeps, the Cancel
button's rule, and what a job accepted before a restart does on resume, by its kind."""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import pytest

from bots.common.delivery import Delivery, Where
from bots.common.intake import Cancelled, Intake, kept_of
from bots.common.support import SupportMessage
from bots.common.words import RESTARTED_MID_WAY
from bots.discord.access import Who
from bots.discord.events import KeptMessage as DiscordMessage
from bots.discord.events import KeptQuestion
from bots.slack.events import KEPT, KeptCommand, KeptMessage, KeptReroll, KeptSupport
from engine import Origin


def test_a_reply_record_is_written_with_the_keys_the_doors_always_wrote():
    slack = Where("C1", "slack:T1:C1:1.0", thread_ts="1.0", user="U1")
    assert slack.to_record() == {"channel": "C1", "conversation": "slack:T1:C1:1.0", "thread_ts": "1.0",
                                 "user": "U1"}
    discord = Where("7", "discord:7:8", reply_to="8", interaction={"app": "1", "token": "t", "at": 2.0})
    assert discord.to_record() == {"channel": "7", "conversation": "discord:7:8", "reply_to": "8",
                                   "interaction": {"app": "1", "token": "t", "at": 2.0}}
    # one written before the records were typed reads back the same
    old = '{"channel": "C1", "thread_ts": null, "user": "U1", "messages": ["1.2"], "delivered": true}'
    delivery = Delivery.resumed(None, "job_1", old)
    assert delivery.where == Where("C1", thread_ts=None, user="U1", delivered=True)
    assert delivery.messages == ["1.2"]
    assert json.loads(delivery.to_ref()) == {"channel": "C1", "user": "U1", "delivered": True, "messages": ["1.2"]}


def test_kept_events_come_back_as_the_kind_they_were_kept_as():
    for kept in (KeptMessage({"ts": "1.0"}, "T1"), KeptSupport({"ts": "2.0"}), KeptCommand({"trigger_id": "x"}),
                 KeptReroll({"actions": []})):
        assert kept_of(json.loads(json.dumps(kept.to_record())), KEPT) == kept
    assert kept_of({"kind": "gone"}, KEPT) is None
    who = Who(user_id="5", channel_id="7", guild_id="9", role_ids=frozenset({"3"}))
    question = SupportMessage("discord", "7", "5", "How do I reset it?", "11", "")
    for kept in (DiscordMessage("7", "8", who), KeptQuestion("9", question)):
        assert kept_of(json.loads(json.dumps(kept.to_record())), (DiscordMessage, KeptQuestion)) == kept


@dataclass
class FakeJob:
    kind: str
    origin: Origin
    messages: list = field(default_factory=list)


class FakeHandle:
    def __init__(self, job_id: str, kind: str, user: str = "U1", done: bool = False):
        self.id, self.job, self.done, self.cancelled = job_id, FakeJob(kind, Origin("slack", user)), done, False

    async def cancel(self) -> bool:
        self.cancelled = True
        return True


class FakeNote:
    def __init__(self, user: str):
        self.origin, self.done, self.cancelled = Origin("slack", user), False, False

    async def cancel(self) -> bool:
        self.cancelled = True
        return True


class FakeEngine:
    def __init__(self, *handles: FakeHandle):
        self.handles = {h.id: h for h in handles}
        self.store = None

    def handle(self, job_id: str):
        return self.handles.get(job_id)


class Said:
    def __init__(self):
        self.earlier: list = []
        self.said: list[str] = []

    async def say(self, text: str) -> None:
        self.said.append(text)


class FakeDoor:
    def __init__(self):
        self.replies: list[Said] = []

    def reply_for(self, where: Where) -> Said:
        self.replies.append(Said())
        return self.replies[-1]


async def test_the_cancel_button_cancels_for_the_asker_or_an_admin_only():
    running, done = FakeHandle("job_1", "chat"), FakeHandle("job_2", "chat", done=True)
    intake = Intake(FakeEngine(running, done), "slack", FakeDoor())

    async def no() -> bool:
        return False

    async def yes() -> bool:
        return True
    assert await intake.cancel("job_2", "slack:U1", no) is Cancelled.FINISHED
    assert await intake.cancel("job_9", "slack:U1", no) is Cancelled.FINISHED
    assert await intake.cancel("job_1", "slack:U2", no) is Cancelled.NOT_YOURS and not running.cancelled
    assert await intake.cancel("job_1", "slack:U2", yes) is Cancelled.CANCELLED and running.cancelled
    # a voice note: the whole pipeline, whichever stage runs
    note = FakeNote("U3")
    intake.pipelines["job_2"] = note
    assert await intake.cancel("job_2", "slack:U1", no) is Cancelled.NOT_YOURS
    assert await intake.cancel("job_2", "slack:U3", no) is Cancelled.CANCELLED and note.cancelled


@pytest.mark.parametrize("kind", ["transcribe", "speak", "ocr"])
async def test_a_chained_stage_resumed_after_a_restart_is_cancelled_with_a_word(kind):
    handle, door = FakeHandle("job_1", kind), FakeDoor()
    await Intake(FakeEngine(handle), "slack", door).resume(handle, {"reply_ref": '{"channel": "C1"}'})
    assert handle.cancelled and door.replies[0].said == [RESTARTED_MID_WAY]


async def test_a_job_whose_answer_goes_nowhere_is_cancelled_on_resume():
    handle, door = FakeHandle("job_1", "chat"), FakeDoor()
    await Intake(FakeEngine(handle), "slack", door).resume(handle, {"reply_ref": None})
    assert handle.cancelled and not door.replies


async def test_a_kind_no_door_answers_is_left_alone_on_resume():
    handle, door = FakeHandle("job_1", "embed"), FakeDoor()
    intake = Intake(FakeEngine(handle), "slack", door)
    await intake.resume(handle, {"reply_ref": '{"channel": "C1"}'})
    await asyncio.sleep(0)
    assert not handle.cancelled and not door.replies and not intake.tasks
