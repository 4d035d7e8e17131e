"""How long each event, command or click waited for its acknowledgement, as the platform counts
its deadline (Slack's 3 s, Discord's 3 s interaction window): from the moment Confab read it off
the wire to the moment its acknowledgement went back. Measured inside Confab, so that a busy
machine's delays elsewhere (another process, a test's own fake of the platform) do not count.

Bounded: the last `keep` acknowledgements are kept, and receipts never acknowledged are dropped
oldest first. A late acknowledgement is logged, since the platform redelivers or refuses it.
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ack:
    key: str            # the envelope, event, trigger or interaction id
    seconds: float      # from receipt to acknowledgement


class AckClock:
    def __init__(self, platform: str, deadline_s: float = 3.0, keep: int = 1000,
                 clock=time.monotonic):
        self.platform, self.deadline_s, self.clock = platform, deadline_s, clock
        self.acks: deque[Ack] = deque(maxlen=keep)
        self.count = 0                  # acknowledgements ever noted (the deque keeps the last)
        self._received: OrderedDict[str, float] = OrderedDict()
        self._keep = keep

    def received(self, key: str) -> None:
        if key and key not in self._received:
            self._received[key] = self.clock()
            while len(self._received) > self._keep:
                self._received.popitem(last=False)

    def acked(self, key: str) -> Ack | None:
        """The acknowledgement of `key` went back; None when its receipt was not seen."""
        started = self._received.pop(key, None)
        return None if started is None else self.took(key, self.clock() - started)

    def took(self, key: str, seconds: float) -> Ack:
        ack = Ack(key, seconds)
        self.acks.append(ack)
        self.count += 1
        if seconds > self.deadline_s:
            log.warning("%s: acknowledged %s after %.1f s (the platform allows %.0f s)",
                        self.platform, key, seconds, self.deadline_s)
        return ack

    def of(self, key: str) -> Ack | None:
        return next((a for a in reversed(self.acks) if a.key == key), None)

    def since(self, count: int) -> list[Ack]:
        """The acknowledgements noted after the first `count` (those still kept)."""
        new = self.count - count
        return list(self.acks)[-new:] if new > 0 else []
