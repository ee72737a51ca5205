"""Request rate limits per caller: a token bucket each, 429 with Retry-After when empty."""

from __future__ import annotations

import math
import time
from collections import OrderedDict

from tidings.server.errors import ApiError

_MAX_CALLERS = 100_000  # buckets kept; the least recently seen go first


class RateLimiter:
    """``rate`` requests per second per caller, with bursts of up to ``burst``."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def check(self, caller: str) -> None:
        """Take a token for ``caller``, or raise 429 saying when to come back."""
        now = time.monotonic()
        tokens, seen = self._buckets.pop(caller, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - seen) * self.rate)
        if tokens < 1.0:
            self._buckets[caller] = (tokens, now)
            wait = math.ceil((1.0 - tokens) / self.rate)
            raise ApiError(
                429,
                "rate_limited",
                f"more than {self.rate:g} requests per second; retry in {wait} s",
                {"Retry-After": str(wait)},
            )
        self._buckets[caller] = (tokens - 1.0, now)
        if len(self._buckets) > _MAX_CALLERS:
            self._buckets.popitem(last=False)
