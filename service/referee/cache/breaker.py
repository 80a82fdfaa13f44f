"""A circuit breaker for the Redis level: after repeated failures, skip Redis for a while
and serve from the memory level; log each episode once, when it starts and when it ends."""

from __future__ import annotations

import logging
import time

__all__ = ["Breaker"]

log = logging.getLogger("referee.cache.redis")


class Breaker:
    """Opens after ``threshold`` failures in a row (one slow call under load is not an
    outage), stays open ``cooldown_s``, then lets calls try again."""

    def __init__(self, cooldown_s: float, threshold: int = 3) -> None:
        self.cooldown_s = cooldown_s
        self.threshold = threshold
        self.open_until = 0.0
        self.failures = 0
        self.failing = False

    def allows(self) -> bool:
        return time.monotonic() >= self.open_until

    def failed(self, what: str, exc: BaseException) -> None:
        self.failures += 1
        if self.failures < self.threshold and not self.failing:
            return
        self.open_until = time.monotonic() + self.cooldown_s
        if not self.failing:
            self.failing = True
            log.warning("redis cache unavailable (%s: %r); serving without it, retrying "
                        "every %.1fs", what, exc, self.cooldown_s)  # fmt: skip

    def succeeded(self) -> None:
        self.failures = 0
        if self.failing:
            self.failing = False
            log.warning("redis cache is back")
