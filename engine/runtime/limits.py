"""Per-person and per-key request rates, and a daily GPU-seconds budget per person.

Checked when a job is submitted (`Limits.check`), charged when it stops running
(`Limits.charge`). Admins are not limited. Who counts as "a person":

- on Slack, Discord, the console and the voice loop: the platform user (`slack:U123`);
- on the API: the rate per user is per `user` field under a key (`api:key-…/alice`), and both
  the per-key rate and the budget are per API key (`api:key-…`), because the key is who is
  accountable and the `user` field is whatever the caller says it is.

Everything here is in memory and bounded; today's GPU-seconds are re-read from the store when
the engine starts, so a restart does not hand out a fresh budget.
"""
from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from engine.errors import BudgetExhausted, RateLimited
from engine.jobs import Origin

WINDOW_S = 60.0
MAX_TRACKED = 10_000     # callers tracked at once; the least recently seen are forgotten


def principal(origin_or_user_key: Origin | str) -> str:
    """Who is accountable for a job: the API key for API jobs, else the person."""
    key = origin_or_user_key.user_key if isinstance(origin_or_user_key, Origin) else origin_or_user_key
    platform, _, user = key.partition(":")
    return f"{platform}:{user.split('/', 1)[0]}" if platform == "api" else key


def day_start(now: float) -> float:
    """The start of the UTC day that `now` (a Unix time) falls in."""
    d = datetime.fromtimestamp(now, timezone.utc)
    return d.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def seconds_to_reset(now: float) -> float:
    return day_start(now) + 86400 - now


class SlidingWindow:
    """At most `limit` events per `window` seconds for each key; bounded in keys."""

    def __init__(self, limit: int, window: float = WINDOW_S, max_keys: int = MAX_TRACKED):
        self.limit, self.window, self.max_keys = limit, window, max_keys
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()

    def _trim(self, key: str, now: float) -> deque[float]:
        hits = self._hits.get(key)
        if hits is None:
            hits = self._hits[key] = deque()
            while len(self._hits) > self.max_keys:
                self._hits.popitem(last=False)
        self._hits.move_to_end(key)
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        return hits

    def retry_after(self, key: str, now: float) -> float | None:
        """None when one more event is allowed now; else the seconds until it is."""
        if self.limit <= 0:
            return None
        hits = self._trim(key, now)
        if len(hits) < self.limit:
            return None
        return max(0.0, hits[0] + self.window - now)

    def hit(self, key: str, now: float) -> None:
        if self.limit > 0:
            self._trim(key, now).append(now)

    def count(self, key: str, now: float) -> int:
        return len(self._trim(key, now)) if key in self._hits else 0


@dataclass(frozen=True)
class Usage:
    who: str
    gpu_s_today: float
    budget_s: float                 # 0: no budget
    requests_last_minute: int
    requests_today: int = 0


class Limits:
    def __init__(self, user_rpm: int = 0, key_rpm: int = 0, daily_gpu_s: float = 0.0,
                 admins: tuple[str, ...] = (), clock: Callable[[], float] = time.time):
        self.user_rate = SlidingWindow(user_rpm)
        self.key_rate = SlidingWindow(key_rpm)
        self.daily_gpu_s = daily_gpu_s
        self.admins = set(admins)
        self.clock = clock
        self._day = day_start(clock())
        self._used: dict[str, float] = {}        # principal -> GPU-seconds today
        self._seen: OrderedDict[str, int] = OrderedDict()   # principal -> requests today
        self._recent = SlidingWindow(1 << 30)               # principal -> requests this minute
        self._refreshed = float("-inf")

    @classmethod
    def from_settings(cls, settings, clock: Callable[[], float] = time.time) -> "Limits":
        return cls(settings.user_rate, settings.key_rate, settings.daily_gpu_seconds,
                   settings.admins, clock)

    def _roll(self, now: float) -> None:
        today = day_start(now)
        if today != self._day:
            self._day, self._used, self._seen = today, {}, OrderedDict()

    def exempt(self, origin: Origin) -> bool:
        return origin.is_admin or origin.user_key in self.admins

    def check(self, origin: Origin) -> None:
        """Count one request, or raise RateLimited / BudgetExhausted (counting nothing)."""
        now = self.clock()
        self._roll(now)
        who = principal(origin)
        self._seen[who] = self._seen.get(who, 0) + 1
        self._seen.move_to_end(who)
        while len(self._seen) > MAX_TRACKED:
            self._seen.popitem(last=False)
        if self.exempt(origin):
            return
        if self.daily_gpu_s > 0 and self._used.get(who, 0.0) >= self.daily_gpu_s:
            raise BudgetExhausted(
                f"Today's budget of {self.daily_gpu_s:g} GPU-seconds is used up "
                f"({self._used[who]:.0f} s used); it resets at midnight UTC.",
                retry_after=seconds_to_reset(now), used_s=self._used[who], budget_s=self.daily_gpu_s)
        user = origin.user_key
        wait = self.user_rate.retry_after(user, now)
        if wait is not None:
            raise RateLimited(f"You have made {self.user_rate.limit} requests in the last minute; "
                              f"the limit is {self.user_rate.limit} per minute.",
                              retry_after=wait, limit="requests per minute per user",
                              maximum=self.user_rate.limit)
        is_key = origin.platform == "api"
        if is_key:
            wait = self.key_rate.retry_after(who, now)
            if wait is not None:
                raise RateLimited(f"This API key has made {self.key_rate.limit} requests in the "
                                  f"last minute; the limit is {self.key_rate.limit} per minute.",
                                  retry_after=wait, limit="requests per minute per key",
                                  maximum=self.key_rate.limit)
        self.user_rate.hit(user, now)
        self._recent.hit(who, now)
        if is_key:
            self.key_rate.hit(who, now)

    def charge(self, origin_or_user_key: Origin | str, seconds: float) -> None:
        """Add a job's run time to its principal's budget for today."""
        self._roll(self.clock())
        who = principal(origin_or_user_key)
        self._used[who] = self._used.get(who, 0.0) + max(0.0, seconds)

    async def refresh(self, store, every_s: float = 60.0) -> None:
        """Catch up with today's GPU-seconds in the store, at most every `every_s` seconds.

        The store is where every worker writes its jobs' run times (with scale-out, other hosts
        run them), so a front that never runs a job still sees its users' budgets. A total
        only ever grows: run time charged here and not yet written is not lost."""
        if self.daily_gpu_s <= 0:
            return
        now = self.clock()
        if now - self._refreshed < every_s:
            return
        self._refreshed = now
        totals = await store.run_seconds_since(day_start(now))
        self._roll(now)
        fresh: dict[str, float] = {}
        for user_key, seconds in totals.items():
            who = principal(user_key)
            fresh[who] = fresh.get(who, 0.0) + seconds
        for who, seconds in fresh.items():
            self._used[who] = max(self._used.get(who, 0.0), seconds)

    def usage(self) -> list[Usage]:
        """Per principal: GPU-seconds today and requests in the last minute (for the dashboard)."""
        now = self.clock()
        self._roll(now)
        out = []
        for who in set(self._used) | set(self._seen):
            out.append(Usage(who, round(self._used.get(who, 0.0), 3), self.daily_gpu_s,
                             self._recent.count(who, now), self._seen.get(who, 0)))
        return sorted(out, key=lambda u: (-u.gpu_s_today, u.who))
