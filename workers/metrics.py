"""A worker interceptor that times every activity attempt and counts failures for Prometheus."""

from __future__ import annotations

import time
from typing import Any

from temporalio import activity
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from core.observability import ACTIVITY_FAILURES, ACTIVITY_SECONDS


class _ActivityMetrics(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        name = activity.info().activity_type
        started = time.perf_counter()
        try:
            result = await super().execute_activity(input)
        except BaseException as exc:
            ACTIVITY_SECONDS.labels(name, "failed").observe(time.perf_counter() - started)
            ACTIVITY_FAILURES.labels(name, type(exc).__name__).inc()
            raise
        ACTIVITY_SECONDS.labels(name, "completed").observe(time.perf_counter() - started)
        return result


class MetricsInterceptor(Interceptor):
    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ActivityMetrics(next)
