"""Heartbeat while waiting on a slow remote call, so a dead worker is noticed in seconds."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from temporalio import activity


@contextlib.asynccontextmanager
async def heartbeating(every: float = 2.0) -> AsyncIterator[None]:
    """Heartbeat every `every` seconds until the block exits (the activity needs a heartbeat timeout)."""

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(every)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
