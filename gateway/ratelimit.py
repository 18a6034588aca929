"""Per-sender rate limits for the inbound channels (moving window, the `limits` library).

`limits` parses the rate strings and runs the moving-window strategy; the storage is ours
(`BoundedMovingWindowStorage`, plugged in through the library's storage interface), because the
library's in-memory storages sweep every key they hold after each hit (the async one) or every
10 ms (the sync one): their cost grows with the number of senders seen in the last window. Here a
hit costs O(1) amortised, whatever the number of senders, and memory is bounded:

* each key holds the timestamps of its hits still inside the window (at most `limit` of them),
  oldest first; expired ones are dropped when the key is next touched;
* keys sit in one queue per window length, ordered by their newest hit; after each hit the
  queue's front is popped while its keys have nothing left in the window (amortised: a key is
  moved to the back once per hit and popped at most once);
* a hard cap on tracked keys (`max_keys`) evicts the least recently hit ones first (a forgotten
  sender starts with a fresh budget: the cap trades exactness for bounded memory under a flood of
  new senders; `crm_fte_rate_limit_keys_evicted_total` counts it).

Everything runs on the event loop without awaiting in between, so no locks are needed.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from limits import RateLimitItem, parse_many
from limits.aio.storage import MovingWindowSupport, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from prometheus_client import Counter

from core.errors import CRMError
from core.logging import get_logger

log = get_logger(__name__)
LIMITED = Counter("crm_fte_rate_limited_total", "Requests refused by a per-sender rate limit", ["channel"])
EVICTED = Counter(
    "crm_fte_rate_limit_keys_evicted_total", "Rate-limit keys forgotten early because the key cap was reached"
)
DEFAULT_MAX_KEYS = 200_000


class BoundedMovingWindowStorage(Storage, MovingWindowSupport):
    """In-process moving-window storage for `limits`: O(1) amortised per hit, bounded memory.

    `clock` returns seconds (monotonic by default); the strategy's reset times are in its terms.
    Only the moving-window strategy is supported (`incr`/`get` exist because the interface
    requires them, as plain expiring counters).
    """

    STORAGE_SCHEME = ["async+bounded-memory"]

    def __init__(
        self,
        uri: str | None = None,
        wrap_exceptions: bool = False,
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
        **options: float | str | bool,
    ) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.max_keys = max_keys
        self.clock = clock
        # key -> hit timestamps inside the window, oldest first
        self._events: dict[str, deque[float]] = {}
        # window length -> keys by newest hit (oldest first); each key is in exactly one queue
        self._by_expiry: dict[float, OrderedDict[str, None]] = {}
        self._expiry_of: dict[str, float] = {}
        # every key by its newest hit (oldest first), whatever its window: what the key cap evicts
        self._recent: OrderedDict[str, None] = OrderedDict()
        # plain counters (incr/get): key -> (value, expires at)
        self._counters: dict[str, tuple[int, float]] = {}

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return ValueError

    def __len__(self) -> int:
        """How many keys are tracked (moving-window keys and counters)."""
        return len(self._events) + len(self._counters)

    # ------------------------------------------------------------------ moving window

    async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        if amount > limit:
            return False
        now = self.clock()
        events = self._events.get(key)
        if events is not None:
            cutoff = now - expiry
            while events and events[0] <= cutoff:
                events.popleft()
            if len(events) + amount > limit:
                return False
        else:
            events = self._events[key] = deque()
        events.extend([now] * amount)
        self._touch(key, float(expiry))
        self._sweep(now)
        return True

    async def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        """(start of the window = the oldest hit still in it, hits in it); (now, 0) when none."""
        now = self.clock()
        events = self._events.get(key)
        if events:
            cutoff = now - expiry
            while events and events[0] <= cutoff:
                events.popleft()
            if events:
                return events[0], len(events)
        return now, 0

    def _touch(self, key: str, expiry: float) -> None:
        queue = self._by_expiry.get(expiry)
        if queue is None:
            queue = self._by_expiry[expiry] = OrderedDict()
        previous = self._expiry_of.get(key)
        if previous is not None and previous != expiry:
            self._by_expiry[previous].pop(key, None)
        self._expiry_of[key] = expiry
        queue[key] = None
        queue.move_to_end(key)
        self._recent[key] = None
        self._recent.move_to_end(key)

    def _sweep(self, now: float) -> None:
        """Forget keys whose newest hit left the window; then enforce the key cap."""
        for expiry, queue in self._by_expiry.items():
            cutoff = now - expiry
            while queue:
                key = next(iter(queue))
                events = self._events.get(key)
                if events and events[-1] > cutoff:
                    break
                queue.popitem(last=False)
                self._forget(key)
        while len(self._events) > self.max_keys:
            key, _ = self._recent.popitem(last=False)  # the least recently hit key
            window = self._expiry_of.get(key)
            if window is not None:
                self._by_expiry[window].pop(key, None)
            self._forget(key)
            EVICTED.inc()

    def _forget(self, key: str) -> None:
        self._events.pop(key, None)
        self._expiry_of.pop(key, None)
        self._recent.pop(key, None)

    # ------------------------------------------------------------------ the rest of the interface

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = self.clock()
        value, expires_at = self._counters.get(key, (0, now))
        if expires_at <= now:
            value, expires_at = 0, now + expiry
        self._counters[key] = (value + amount, expires_at)
        if len(self._counters) > self.max_keys:
            self._counters = {k: v for k, v in self._counters.items() if v[1] > now}
        return value + amount

    async def get(self, key: str) -> int:
        value, expires_at = self._counters.get(key, (0, 0.0))
        return value if expires_at > self.clock() else 0

    async def get_expiry(self, key: str) -> float:
        now = self.clock()
        _, expires_at = self._counters.get(key, (0, now))
        return max(expires_at, now)

    async def check(self) -> bool:
        return True

    async def reset(self) -> int | None:
        count = len(self)
        self._events.clear()
        self._by_expiry.clear()
        self._expiry_of.clear()
        self._recent.clear()
        self._counters.clear()
        return count

    async def clear(self, key: str) -> None:
        expiry = self._expiry_of.get(key)
        if expiry is not None:
            self._by_expiry[expiry].pop(key, None)
        self._forget(key)
        self._counters.pop(key, None)


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
    storage: BoundedMovingWindowStorage = field(default_factory=BoundedMovingWindowStorage)
    _limiter: MovingWindowRateLimiter = field(init=False)

    def __post_init__(self) -> None:
        self._limiter = MovingWindowRateLimiter(self.storage)

    @classmethod
    def from_strings(
        cls,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = DEFAULT_MAX_KEYS,
        **rules: str,
    ) -> SenderLimiter:
        storage = BoundedMovingWindowStorage(clock=clock, max_keys=max_keys)
        return cls({channel: parse_many(spec) for channel, spec in rules.items()}, storage)

    async def check(self, channel: str, sender: str) -> None:
        """Count one request; raise TooManyRequests (429 with Retry-After) when over any limit."""
        items = self.rules.get(channel)
        if not items:
            return
        sender = sender.lower()
        for item in items:
            if not await self._limiter.hit(item, channel, sender):
                await self._refuse(channel, sender, item, f"too many messages from this sender ({item})")

    async def refuse_if_exhausted(self, channel: str, key: str, message: str) -> None:
        """429 if `key` has used up any of the channel's limits; counts nothing (see `count`)."""
        key = key.lower()
        for item in self.rules.get(channel, ()):
            if not await self._limiter.test(item, channel, key):
                await self._refuse(channel, key, item, message)

    async def _refuse(self, channel: str, key: str, item: RateLimitItem, message: str) -> None:
        """Raise the 429 for `key` over `item`, with the seconds until its window frees a slot."""
        stats = await self._limiter.get_window_stats(item, channel, key)
        retry_after = max(1, math.ceil(stats.reset_time - self.storage.clock()))
        LIMITED.labels(channel).inc()
        log.warning("gateway.rate_limited", channel=channel, limit=str(item), retry_after=retry_after)
        raise TooManyRequests(f"{message}; try again in {retry_after} seconds", retry_after=retry_after)

    async def count(self, channel: str, key: str) -> None:
        """Count one event against `key` (e.g. a failed look-up) without refusing anything now."""
        key = key.lower()
        for item in self.rules.get(channel, ()):
            await self._limiter.hit(item, channel, key)
