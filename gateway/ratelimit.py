"""Per-sender rate limits for the inbound channels (moving window, the `limits` library)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter
from prometheus_client import Counter

from core.errors import CRMError
from core.logging import get_logger

log = get_logger(__name__)
LIMITED = Counter("crm_fte_rate_limited_total", "Requests refused by a per-sender rate limit", ["channel"])


class TooManyRequests(CRMError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class SenderLimiter:
    """One limiter per gateway process; keys are (channel, sender) so senders never share a budget."""

    rules: dict[str, list[RateLimitItem]]
    _limiter: MovingWindowRateLimiter = field(default_factory=lambda: MovingWindowRateLimiter(MemoryStorage()))

    @classmethod
    def from_strings(cls, **rules: str) -> SenderLimiter:
        return cls({channel: parse_many(spec) for channel, spec in rules.items()})

    async def check(self, channel: str, sender: str) -> None:
        """Count one request; raise TooManyRequests (429 with Retry-After) when over any limit."""
        for item in self.rules.get(channel, []):
            if not await self._limiter.hit(item, channel, sender.lower()):
                stats = await self._limiter.get_window_stats(item, channel, sender.lower())
                retry_after = max(1, math.ceil(stats.reset_time - time.time()))
                LIMITED.labels(channel).inc()
                log.warning("gateway.rate_limited", channel=channel, limit=str(item), retry_after=retry_after)
                raise TooManyRequests(
                    f"too many messages from this sender ({item}); try again in {retry_after} seconds",
                    retry_after=retry_after,
                )
