"""Shared plumbing for long-running processes: signals, retry with backoff."""

from __future__ import annotations

import asyncio
import random
import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

from core.logging import get_logger

T = TypeVar("T")
log = get_logger(__name__)


def install_stop_event() -> asyncio.Event:
    """An event set on SIGTERM/SIGINT, so the process can drain instead of dying mid-work."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def retry_forever(
    what: str,
    attempt: Callable[[], Awaitable[T]],
    stop: asyncio.Event,
    *,
    initial: float = 0.5,
    maximum: float = 15.0,
) -> T | None:
    """Retry `attempt` with jittered exponential backoff until it succeeds or `stop` is set.

    Always tries at least once (a drain still commits). A dependency outage (broker restart,
    Temporal restart) must not turn into a crash loop.
    """
    delay = initial
    failures = 0
    while True:
        try:
            return await attempt()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if stop.is_set():
                log.warning(f"{what}.abandoned_on_stop", error=f"{type(exc).__name__}: {exc}"[:300])
                return None
            failures += 1
            log.warning(
                f"{what}.retrying",
                attempt=failures,
                error=f"{type(exc).__name__}: {exc}"[:300],
                delay_s=round(delay, 2),
            )
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except TimeoutError:
                pass
            delay = min(maximum, delay * 2) * (0.8 + 0.4 * random.random())
