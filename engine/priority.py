"""Who and where a job comes from decides how urgent it is.

0: direct messages, admins and the live voice loop. 1: anything else a person waits for.
2: background and bulk work.
"""
from __future__ import annotations

from engine.jobs import Origin

URGENT, INTERACTIVE, BACKGROUND = 0, 1, 2
CLASSES = (URGENT, INTERACTIVE, BACKGROUND)


def priority_class(origin: Origin, admins: tuple[str, ...] = ()) -> int:
    if origin.is_dm or origin.is_admin or origin.is_live_voice:
        return URGENT
    if origin.user_key in admins or origin.user in admins:
        return URGENT
    if origin.background:
        return BACKGROUND
    return INTERACTIVE


def clamp_requested(requested: int | None, origin: Origin, admins: tuple[str, ...] = ()) -> int:
    """An API caller may ask for a class, but never a more urgent one than its origin earns."""
    earned = priority_class(origin, admins)
    if requested is None:
        return earned
    return max(earned, min(BACKGROUND, max(URGENT, int(requested))))
