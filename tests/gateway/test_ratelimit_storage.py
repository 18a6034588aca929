"""The per-sender limiter and its bounded in-memory storage, with a fake clock (no sleeps, no services)."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from gateway.ratelimit import BoundedMovingWindowStorage, SenderLimiter, TooManyRequests


class FakeClock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _limited_count(channel: str) -> float:
    return REGISTRY.get_sample_value("crm_fte_rate_limited_total", {"channel": channel}) or 0.0


async def _allowed(limiter: SenderLimiter, channel: str, sender: str) -> bool:
    try:
        await limiter.check(channel, sender)
    except TooManyRequests:
        return False
    return True


async def test_a_flooding_sender_is_refused_while_others_are_served() -> None:
    clock = FakeClock()
    limiter = SenderLimiter.from_strings(clock=clock, whatsapp="3/minute;5/hour")
    before = _limited_count("whatsapp")
    flood = [await _allowed(limiter, "whatsapp", "+15550000001") for _ in range(6)]
    assert flood == [True, True, True, False, False, False]
    assert _limited_count("whatsapp") == before + 3
    # Other senders, and the same sender on another channel, have budgets of their own.
    assert all([await _allowed(limiter, "whatsapp", f"+1555000{i:04d}") for i in range(2, 50)])
    limiter.rules["web_form"] = limiter.rules["whatsapp"]
    assert await _allowed(limiter, "web_form", "+15550000001")
    # A channel without rules is never limited.
    assert all([await _allowed(limiter, "gmail", "x@example.com") for _ in range(100)])


async def test_the_sender_key_ignores_case() -> None:
    limiter = SenderLimiter.from_strings(clock=FakeClock(), web_form="2/minute")
    assert await _allowed(limiter, "web_form", "Ana@Example.com")
    assert await _allowed(limiter, "web_form", "ana@example.com")
    assert not await _allowed(limiter, "web_form", "ANA@EXAMPLE.COM")


async def test_retry_after_is_when_the_oldest_hit_leaves_the_window() -> None:
    clock = FakeClock()
    limiter = SenderLimiter.from_strings(clock=clock, whatsapp="3/minute")
    await limiter.check("whatsapp", "+15550000001")  # t = 0
    clock.advance(10)
    await limiter.check("whatsapp", "+15550000001")  # t = 10
    clock.advance(5)
    await limiter.check("whatsapp", "+15550000001")  # t = 15
    clock.advance(0.5)  # t = 15.5: the first hit leaves the window at t = 60
    with pytest.raises(TooManyRequests) as refused:
        await limiter.check("whatsapp", "+15550000001")
    assert refused.value.retry_after == 45  # ceil(60 - 15.5)
    assert refused.value.status_code == 429 and refused.value.code == "rate_limited"
    assert "try again in 45 seconds" in refused.value.message
    clock.advance(44.4)  # t = 59.9
    with pytest.raises(TooManyRequests) as still:
        await limiter.check("whatsapp", "+15550000001")
    assert still.value.retry_after == 1  # never 0


async def test_the_window_frees_up_after_expiry() -> None:
    clock = FakeClock()
    limiter = SenderLimiter.from_strings(clock=clock, whatsapp="2/minute;3/hour")
    sender = "+15550000001"
    assert [await _allowed(limiter, "whatsapp", sender) for _ in range(3)] == [True, True, False]
    clock.advance(60)  # the minute window moved past both hits
    assert await _allowed(limiter, "whatsapp", sender)  # third hit of the hour
    # The hour budget is now spent (the minute limit still has room): refused by the hour limit.
    with pytest.raises(TooManyRequests) as refused:
        await limiter.check("whatsapp", sender)
    assert "hour" in str(refused.value.message)
    assert refused.value.retry_after == 3600 - 60
    clock.advance(3600 - 60)
    assert await _allowed(limiter, "whatsapp", sender)


async def test_memory_is_bounded_when_100k_senders_hit_once() -> None:
    clock = FakeClock()
    limiter = SenderLimiter.from_strings(clock=clock, whatsapp="30/minute;300/hour")
    storage = limiter.storage
    for i in range(100_000):
        await limiter.check("whatsapp", f"+1{i:010d}")
        clock.advance(0.001)  # 100 s for all of them
    # Two limits per sender; the minute keys of senders idle for a minute are gone already.
    assert len(storage) <= 100_000 + 60_001
    clock.advance(3600)
    await limiter.check("whatsapp", "+19999999999")  # any hit sweeps what expired
    assert len(storage) == 2


async def test_the_key_cap_holds_under_a_flood_of_new_senders() -> None:
    clock = FakeClock()
    limiter = SenderLimiter.from_strings(clock=clock, max_keys=1_000, whatsapp="30/minute;300/hour")
    storage = limiter.storage
    for i in range(100_000):
        await limiter.check("whatsapp", f"+1{i:010d}")  # all within the same instant
        assert len(storage) <= 1_000
    # The most recent senders are still tracked (the least recently seen were forgotten first).
    for _ in range(29):
        await limiter.check("whatsapp", "+10000099999")
    assert not await _allowed(limiter, "whatsapp", "+10000099999")


async def test_storage_moving_window_interface() -> None:
    clock = FakeClock()
    storage = BoundedMovingWindowStorage(clock=clock)
    assert await storage.acquire_entry("k", 2, 60)
    clock.advance(1)
    assert await storage.acquire_entry("k", 2, 60)
    assert not await storage.acquire_entry("k", 2, 60)
    assert not await storage.acquire_entry("k", 2, 60, amount=3)  # more than the limit: never
    assert await storage.get_moving_window("k", 2, 60) == (1_000.0, 2)
    clock.advance(59.5)  # the first hit (t = 1000) is out at t = 1060
    assert await storage.get_moving_window("k", 2, 60) == (1_001.0, 1)
    assert await storage.get_moving_window("other", 2, 60) == (clock.now, 0)
    await storage.clear("k")
    assert await storage.get_moving_window("k", 2, 60) == (clock.now, 0)
    assert await storage.check()
    assert await storage.acquire_entry("k", 2, 60)
    assert await storage.reset() == 1
    assert len(storage) == 0
    with pytest.raises(ValueError):
        BoundedMovingWindowStorage(max_keys=0)
