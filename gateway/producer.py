"""Publishing inbound messages to Kafka: 2xx to a provider only after the broker acknowledged."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prometheus_client import Histogram

from core.errors import ServiceUnavailable
from core.logging import get_logger
from core.observability import kafka_trace_headers
from gateway.resources import Resources
from workflows.contracts import InboundMessage

log = get_logger(__name__)

PRODUCE_LATENCY = Histogram(
    "crm_fte_kafka_produce_seconds", "Time until the broker acknowledged an inbound record", ["channel"]
)


_PRODUCE_LATENCY_CHILDREN: dict[str, Any] = {}


def _produce_latency(channel: str) -> Any:
    """The histogram child for a channel (a handful of channels; `.labels()` locks and allocates)."""
    child = _PRODUCE_LATENCY_CHILDREN.get(channel)
    if child is None:
        child = _PRODUCE_LATENCY_CHILDREN[channel] = PRODUCE_LATENCY.labels(channel)
    return child


async def publish_inbound(resources: Resources, message: InboundMessage) -> None:
    """Produce one record keyed by conversation key (per-conversation order), waiting for acks=all.

    Raises ServiceUnavailable (503) if the broker does not acknowledge, so the provider retries.
    """
    settings = resources.settings
    started = time.perf_counter()
    try:
        producer = await resources.kafka.get()
        # asyncio.timeout, not wait_for: wait_for wraps the send in a task of its own per request.
        async with asyncio.timeout(10.0):
            await producer.send_and_wait(
                settings.kafka_topic_inbound,
                value=message.model_dump_json().encode(),
                key=f"{message.channel}:{message.conversation_key}".encode(),
                # No span can be active with tracing off: skip the propagators' work.
                headers=kafka_trace_headers() if settings.tracing_enabled else [],
            )
    except Exception as exc:
        log.warning("gateway.produce_failed", channel=message.channel, error=type(exc).__name__)
        # Drop a producer that may be wedged; the next request starts a fresh one.
        await resources.kafka.close()
        raise ServiceUnavailable("the message broker did not acknowledge the message; retry later") from exc
    _produce_latency(message.channel).observe(time.perf_counter() - started)
    log.info("gateway.message_published", channel=message.channel, message_id=message.external_message_id)
