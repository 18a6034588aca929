"""Tuning shared by the long-running processes (gateway, worker)."""

from __future__ import annotations

import gc

GC_YOUNG_THRESHOLD = 10_000


def tune_gc() -> tuple[int, int, int]:
    """Garbage-collector settings for a long-running server, called once start-up is done; returns
    the thresholds to restore.

    Everything imported and built at start-up lives as long as the process: `gc.freeze()` moves it
    out of the collector's view, or every full collection walks those ~200k objects again (~0.1 s
    each, on the event loop: a pause every request or workflow task waiting behind it feels). And
    with the default young-generation threshold (700 container allocations) a collection runs every
    few requests and promotes the objects of those still in flight, which then make the older
    generations' collections frequent and long. The servers make few reference cycles, so a higher
    threshold costs little memory. Under load (c=50) the two took the collector from ~15 % of the
    gateway's CPU to ~0.
    """
    previous = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(max(previous[0], GC_YOUNG_THRESHOLD), previous[1], previous[2])
    return previous
