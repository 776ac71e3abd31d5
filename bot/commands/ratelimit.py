"""The per-user rate limit that `CommandHandler.gate` checks before a command runs: a sliding window
of one minute, kept in memory (one bot process), with a clock that tests can replace.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class RateLimiter:
    """At most `per_minute` commands per user in any 60 s. The first refused command in a burst
    is answered; the rest are dropped silently, so a spammer cannot make the bot spam."""

    WINDOW_S = 60.0

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic):
        self.per_minute = per_minute
        self.clock = clock
        self._hits: dict[int, deque[float]] = {}
        self._warned_until: dict[int, float] = {}

    def check(self, user_id: int) -> tuple[bool, float, bool]:
        """(allowed, seconds until the next command is allowed, whether to tell the user)."""
        now = self.clock()
        hits = self._hits.setdefault(user_id, deque())
        while hits and hits[0] <= now - self.WINDOW_S:
            hits.popleft()
        if len(hits) < self.per_minute:
            hits.append(now)
            return True, 0.0, False
        retry = hits[0] + self.WINDOW_S - now
        warn = self._warned_until.get(user_id, 0.0) <= now
        if warn:
            self._warned_until[user_id] = now + retry
        return False, retry, warn
