"""Support channels, platform-neutral: what to do with each message, feedback and escalation.

An adapter turns a platform message in a support channel into a `SupportMessage` and calls
`SupportDesk.on_message`; the answer is None (do nothing) or a `SupportAction` to carry out (a
threaded reply, with Helpful / Not helpful buttons when it is an answer). Button presses go to
`feedback`, which may return a ping for the support group. A periodic task calls
`due_escalations` (every minute or so) and posts what it returns.

The rules, from the issue:
- bots and non-questions (greetings, thanks, emoji) are left alone;
- only new top-level questions are answered, in a thread, at class 1;
- once a support-group member replied in a thread Confab never answers there again, and a
  human reply that arrives while Confab is still thinking wins (the answer is dropped);
- a hand-over with no human reply within `escalate_minutes` pings the group, once;
  "not helpful" pings the group at once; "helpful" is recorded.

Thread state is kept in memory, bounded; after a restart Confab does not escalate threads
handed over before it. A question the desk `takes` is kept in the store by the adapter before
anything else, and one still open after a restart goes to `answer_again` with its thread's replies.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Awaitable, Callable

from bots.common.channels import ChannelsConfig, SupportChannel, load_channels
from engine import ConfabError, Origin
from engine.kb import Outcome, SupportDeskAnswerer, is_question, open_kb

log = logging.getLogger(__name__)

FEEDBACK_THANKS = "Thanks, noted."
FEEDBACK_SORRY = "Sorry about that; I've asked the support team."

MAX_THREADS = 10_000


@dataclass(frozen=True)
class SupportMessage:
    platform: str                  # slack | discord
    channel: str
    user: str
    text: str
    id: str                        # this message's id (Slack ts, Discord message id)
    thread: str = ""               # the thread's root id for a reply; "" for a top-level message
    is_bot: bool = False
    memberships: tuple[str, ...] = ()   # user-group / role ids the author holds, where known
    mine: bool = False             # Confab's own message

    @classmethod
    def of(cls, record: dict) -> "SupportMessage":
        """From `dataclasses.asdict` of one, as an adapter keeps it in the store."""
        return cls(**{**record, "memberships": tuple(record.get("memberships") or ())})


@dataclass(frozen=True)
class SupportAction:
    kind: str                      # reply | ping
    channel: str
    thread: str                    # the thread to post in (the question's id)
    text: str
    outcome_id: int | None = None  # for the feedback buttons' value
    buttons: bool = False          # show Helpful / Not helpful
    decision: str = ""             # answer | handover (replies)


@dataclass
class _Thread:
    state: str                     # thinking | answer | handover | silent | human
    at: float
    channel: SupportChannel
    escalated: bool = False


class SupportDesk:
    def __init__(self, engine, answerer: SupportDeskAnswerer, channels: ChannelsConfig,
                 clock: Callable[[], float] = time.time):
        self.engine, self.answerer, self.channels, self.clock = engine, answerer, channels, clock
        self._threads: OrderedDict[tuple[str, str, str], _Thread] = OrderedDict()

    def close(self) -> None:
        """Close the knowledge base (its database and thread). Blocking: call it in a thread."""
        self.answerer.kb.close()

    def _remember(self, key, thread: _Thread) -> None:
        self._threads[key] = thread
        self._threads.move_to_end(key)
        while len(self._threads) > MAX_THREADS:
            self._threads.popitem(last=False)

    def is_support_channel(self, platform: str, channel: str) -> bool:
        return self.channels.support_for(platform, channel) is not None

    def takes(self, msg: SupportMessage) -> bool:
        """Whether `msg` is a question the desk may answer (new, top-level, by a person, in a
        support channel): the adapter keeps such a message in the store before its platform hears
        that it arrived, so that a restart answers it (`answer_again`)."""
        return (not msg.is_bot and not (msg.thread and msg.thread != msg.id) and is_question(msg.text)
                and self.channels.support_for(msg.platform, msg.channel) is not None)

    async def answer_again(self, msg: SupportMessage, replies: list[SupportMessage]) -> SupportAction | None:
        """A question kept before a restart that was not answered then; `replies` are the
        messages in its thread now. Nothing when Confab's reply is among them (the kill came
        after it reached the platform), nor when a person of the support group replied meanwhile."""
        if any(r.mine for r in replies):
            return None
        for reply in replies:
            await self.on_message(reply)
        return await self.on_message(msg)

    async def on_message(self, msg: SupportMessage) -> SupportAction | None:
        channel = self.channels.support_for(msg.platform, msg.channel)
        if channel is None or msg.is_bot:
            return None
        if msg.thread and msg.thread != msg.id:
            if self.channels.is_support_member(channel, msg.user, msg.memberships):
                key = (msg.platform, msg.channel, msg.thread)
                known = self._threads.get(key)
                self._remember(key, _Thread("human", self.clock(), channel,
                                            known.escalated if known else False))
            return None    # Confab answers new questions, never inside a conversation
        key = (msg.platform, msg.channel, msg.id)
        if key in self._threads or not is_question(msg.text):
            return None
        self._remember(key, _Thread("thinking", self.clock(), channel))
        origin = Origin(platform=msg.platform, user=msg.user, channel=msg.channel, thread=msg.id)
        outcome: Outcome = await self.answerer.answer(msg.text, channel.policy(self.engine.settings), origin)
        thread = self._threads.get(key)
        if thread is None or thread.state == "human":
            log.info("a person answered %s first; dropping Confab's %s", key, outcome.decision)
            return None
        thread.state, thread.at = outcome.decision, self.clock()
        if outcome.decision == "silent":
            return None
        return SupportAction("reply", msg.channel, msg.id, outcome.text, outcome.outcome_id,
                             buttons=outcome.decision == "answer", decision=outcome.decision)

    async def feedback(self, platform: str, channel: str, thread: str, outcome_id: int | None,
                       helpful: bool) -> SupportAction | None:
        """Record a Helpful / Not helpful press; "not helpful" returns a ping for the group."""
        if outcome_id is not None:
            await self.answerer.kb.feedback(outcome_id, helpful)
        if helpful:
            return None
        return self._ping(platform, channel, thread,
                          "the answer above did not help; could someone take this one?")

    def due_escalations(self) -> list[SupportAction]:
        """Pings for hand-overs that no person has answered in time (each thread once)."""
        now, out = self.clock(), []
        for (platform, channel, thread_id), t in list(self._threads.items()):
            if t.state != "handover" or t.escalated:
                continue
            if now - t.at >= 60 * t.channel.escalate_minutes(self.engine.settings):
                t.escalated = True
                minutes = round((now - t.at) / 60)
                ping = self._ping(platform, channel, thread_id,
                                  f"this question has waited {minutes} min for a person.")
                if ping:
                    out.append(ping)
        return out

    def _ping(self, platform: str, channel: str, thread: str, why: str) -> SupportAction | None:
        sc = self.channels.support_for(platform, channel)
        group = self.channels.group_of(sc) if sc else None
        mention = group.mention(platform) if group else ""
        key = (platform, channel, thread)
        if key in self._threads:
            self._threads[key].escalated = True
        return SupportAction("ping", channel, thread, f"{mention} {why}".strip())


def build_support_desk(engine, clock: Callable[[], float] = time.time,
                       platform: str = "") -> SupportDesk | None:
    """The desk for CONFAB_CHANNELS_FILE's support channels (on `platform`, when given); None
    when there are none (or the kb extra is not installed: the log says so). Adapters call this
    once at start-up."""
    channels = load_channels(engine.settings.channels_file)
    if not any(not platform or p == platform for p, _ in channels.support):
        return None
    try:
        kb = open_kb(engine)
    except ConfabError as e:
        log.warning("support channels are configured but the knowledge base cannot open: %s", e.message)
        return None
    return SupportDesk(engine, SupportDeskAnswerer(engine, kb), channels, clock)


async def run_escalations(desk: SupportDesk, post: Callable[[SupportAction], Awaitable[object]],
                          every_s: float = 60.0) -> None:
    """Post due escalation pings every `every_s` seconds until cancelled (an adapter's task)."""
    while True:
        await asyncio.sleep(every_s)
        for action in desk.due_escalations():
            try:
                await post(action)
            except Exception:
                log.exception("posting an escalation in %s failed", action.channel)


class DoorDesk:
    """The desk on one door: what every door does alike (the escalation loop, feedback on an
    answer); the door gives how to post an action (`post`) and how to read its events."""
    platform: str

    def __init__(self, desk: SupportDesk, escalate_every_s: float = 60.0):
        self.desk = desk
        self._escalations = asyncio.ensure_future(run_escalations(desk, self.post, escalate_every_s))

    def takes(self, msg: SupportMessage) -> bool:
        return self.desk.takes(msg)

    async def post(self, action: SupportAction) -> object:
        raise NotImplementedError

    async def record_feedback(self, channel: str, thread: str, outcome_id: int | None, helpful: bool,
                              tell: Callable[[str], Awaitable[object]]) -> None:
        """A Helpful / Not helpful press (acknowledged already): recorded, the presser thanked
        (`tell`: to them alone); "not helpful" pings the support group in the thread."""
        ping = await self.desk.feedback(self.platform, channel, thread, outcome_id, helpful)
        await tell(FEEDBACK_THANKS if helpful else FEEDBACK_SORRY)
        if ping is not None:
            await self.post(ping)

    async def stop(self) -> None:
        self._escalations.cancel()
        try:
            await self._escalations
        except (asyncio.CancelledError, Exception):
            pass
