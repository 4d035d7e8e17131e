"""Who may ask, where, and how often: allow and deny lists, and a per-person rate limit.

Platform-neutral: an adapter builds one `Access` from its settings and asks `check` before it
turns an event into a job. The answer is None (go ahead) or the words to say instead.
"""
from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Callable

from bots.common import words


@dataclass(frozen=True)
class Lists:
    allow_channels: frozenset[str] = frozenset()
    deny_channels: frozenset[str] = frozenset()
    allow_users: frozenset[str] = frozenset()
    deny_users: frozenset[str] = frozenset()

    @classmethod
    def of(cls, allow_channels=(), deny_channels=(), allow_users=(), deny_users=()) -> "Lists":
        return cls(frozenset(allow_channels), frozenset(deny_channels), frozenset(allow_users),
                   frozenset(deny_users))


class RateLimit:
    """At most `per_minute` requests per person in any 60 s; remembers at most `max_people`
    people (the least recently seen are forgotten first)."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic,
                 max_people: int = 10_000):
        self.per_minute, self.clock, self.max_people = per_minute, clock, max_people
        self._seen: OrderedDict[str, deque] = OrderedDict()

    def hit(self, who: str) -> float:
        """Count one request; 0 when allowed, else the seconds until the next one may go."""
        if self.per_minute <= 0:
            return 0.0
        now = self.clock()
        times = self._seen.pop(who, None) or deque()
        while times and now - times[0] >= 60.0:
            times.popleft()
        self._seen[who] = times
        while len(self._seen) > self.max_people:
            self._seen.popitem(last=False)
        if len(times) >= self.per_minute:
            return max(1.0, 60.0 - (now - times[0]))
        times.append(now)
        return 0.0


class Access:
    def __init__(self, lists: Lists, rate: RateLimit):
        self.lists, self.rate = lists, rate

    def check(self, user: str, channel: str, is_admin: bool = False) -> str | None:
        lists = self.lists
        if user in lists.deny_users or (lists.allow_users and user not in lists.allow_users and not is_admin):
            return words.NOT_ALLOWED_USER
        if channel in lists.deny_channels or (lists.allow_channels and channel not in lists.allow_channels):
            return words.NOT_THIS_CHANNEL
        if is_admin:
            return None
        wait = self.rate.hit(user)
        if wait:
            return words.too_many_requests(self.rate.per_minute, wait)
        return None
