"""Timeouts and retry policies, chosen per kind of side effect, and the business-hours clock."""

from __future__ import annotations

from collections.abc import Collection
from datetime import date, datetime, timedelta

from temporalio.common import RetryPolicy

# CRM reads/writes: fast, idempotent; retry through a PostgreSQL restart (minutes), then give up
# loudly rather than silently.
DB_TIMEOUT = timedelta(seconds=15)
DB_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=0,  # unlimited within the schedule-to-close budget below
)
DB_SCHEDULE_TO_CLOSE = timedelta(minutes=30)

# Pure CPU (guardrails, formatting): cheap to retry, never worth waiting long for.
CPU_TIMEOUT = timedelta(seconds=10)
CPU_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=5)

# Tools (knowledge-base search embeds the query, then PostgreSQL): a bounded attempt each,
# retried with DB_RETRY through a database restart.
KB_TIMEOUT = timedelta(seconds=30)

# One model call. 429 and 5xx retry with backoff; a request the model rejects is non-retryable.
LLM_TIMEOUT = timedelta(seconds=90)
# The step heartbeats while it waits for the model: a worker that dies mid-call is noticed quickly.
LLM_HEARTBEAT = timedelta(seconds=10)
LLM_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=6,
    non_retryable_error_types=["ModelRejected"],
)

# Channel sends: idempotent per outbound message id; providers have outages, keep trying for a while.
SEND_TIMEOUT = timedelta(seconds=30)
SEND_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=0,
    non_retryable_error_types=["SendRejected"],
)
SEND_SCHEDULE_TO_CLOSE = timedelta(hours=1)


def add_business_hours(
    start: datetime,
    hours: float,
    *,
    day_start: int = 9,
    day_end: int = 17,
    holidays: Collection[date] = (),
) -> datetime:
    """`start` plus `hours` of Monday-Friday working time (in start's timezone), skipping `holidays`;
    deterministic."""
    remaining = timedelta(hours=hours)
    current = start
    while remaining > timedelta(0):
        if current.weekday() >= 5 or current.date() in holidays:  # a day off: the next day's opening
            current = (current + timedelta(days=1)).replace(hour=day_start, minute=0, second=0, microsecond=0)
            continue
        opening = current.replace(hour=day_start, minute=0, second=0, microsecond=0)
        closing = current.replace(hour=day_end, minute=0, second=0, microsecond=0)
        if current < opening:
            current = opening
        if current >= closing:
            current = opening + timedelta(days=1)
            continue
        available = closing - current
        step = min(available, remaining)
        current += step
        remaining -= step
    return current
