"""`crm-fte bridge`: Kafka → Temporal. Signal-with-start each record, then commit its offset.

At-least-once on the wire: an offset is committed only after Temporal accepted the signal, so a
crash between the two replays the record, and the workflow drops the duplicate by message id.
Records that can never succeed (not JSON, not a valid InboundMessage) go to the dead-letter topic
with the error attached, so one bad record never blocks its partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from prometheus_client import Counter, Gauge, Histogram
from pydantic import ValidationError
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy

from core.kafka import client_kwargs, consumer_group_kwargs, producer_kwargs
from core.logging import get_logger
from core.observability import configure_tracing, context_from_kafka_headers, tracer
from core.settings import Settings
from core.temporal import connect_temporal
from workers.health_server import serve_health
from workers.process import install_stop_event, retry_forever
from workflows import search_attributes as sa
from workflows.contracts import (
    CONVERSATION_WORKFLOW,
    INBOUND_SIGNAL,
    ConversationInput,
    InboundMessage,
    conversation_workflow_id,
)

log = get_logger(__name__)
_tracer = tracer(__name__)

RECORDS = Counter("crm_fte_bridge_records_total", "Kafka records handled by the bridge", ["outcome"])
for _outcome in ("signalled", "dead_lettered"):  # at zero from the start: the dead-letter alert's increase()
    RECORDS.labels(_outcome)
SIGNAL_LATENCY = Histogram("crm_fte_bridge_signal_seconds", "Signal-with-start latency")
# Conversations of one partition signalled at the same time (per-conversation order is kept).
MAX_CONCURRENT_SIGNALS_PER_PARTITION = 32
LAG = Gauge("crm_fte_bridge_lag", "Records not yet consumed, per partition", ["topic", "partition"])


def start_search_attributes(message: InboundMessage) -> TypedSearchAttributes:
    """What an operator filters by in the Temporal UI, set when the conversation starts."""
    pairs: list[SearchAttributePair[Any]] = [
        SearchAttributePair(sa.CHANNEL, message.channel),
        SearchAttributePair(sa.CONVERSATION_STATUS, "active"),
        SearchAttributePair(sa.ESCALATED, False),
    ]
    if message.sender.email:
        pairs.append(SearchAttributePair(sa.CUSTOMER_EMAIL, message.sender.email.lower()))
    if message.sender.phone:
        pairs.append(SearchAttributePair(sa.CUSTOMER_PHONE, message.sender.phone))
    return TypedSearchAttributes(pairs)


async def signal_with_start(client: Client, settings: Settings, message: InboundMessage) -> str:
    """Deliver one message to its conversation's workflow, starting it if none is running."""
    workflow_id = conversation_workflow_id(message.channel, message.conversation_key)
    await client.start_workflow(
        CONVERSATION_WORKFLOW,
        ConversationInput(channel=message.channel, conversation_key=message.conversation_key),
        id=workflow_id,
        task_queue=settings.temporal_task_queue,
        start_signal=INBOUND_SIGNAL,
        start_signal_args=[message],
        # A closed conversation on the same key (same phone, same thread) starts a fresh run.
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        search_attributes=start_search_attributes(message) if settings.temporal_search_attributes else None,
    )
    return workflow_id


class Bridge:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.consumer: AIOKafkaConsumer | None = None
        self.dlq: AIOKafkaProducer | None = None
        self.client: Client | None = None
        self.ready = False
        self._lag_reported: set[TopicPartition] = set()

    def readiness(self) -> tuple[bool, dict[str, object]]:
        return self.ready, {"kafka_consumer": self.consumer is not None, "temporal": self.client is not None}

    async def _start_kafka(self) -> bool:
        consumer = AIOKafkaConsumer(
            self.settings.kafka_topic_inbound,
            **client_kwargs(self.settings),
            **consumer_group_kwargs(self.settings),
            group_id=self.settings.kafka_consumer_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=200,
        )
        dlq = AIOKafkaProducer(**producer_kwargs(self.settings))
        try:
            await consumer.start()
            await dlq.start()
        except Exception:
            await consumer.stop()
            await dlq.stop()
            raise
        self.consumer, self.dlq = consumer, dlq
        return True

    async def _to_dead_letter(self, record: ConsumerRecord, error: str) -> None:
        assert self.dlq is not None
        headers = [
            ("error", error[:1000].encode()),
            ("source_topic", record.topic.encode()),
            ("source_partition", str(record.partition).encode()),
            ("source_offset", str(record.offset).encode()),
        ]
        await self.dlq.send_and_wait(
            self.settings.kafka_topic_dead_letter, record.value, key=record.key, headers=headers
        )
        RECORDS.labels("dead_lettered").inc()
        log.warning("bridge.dead_lettered", partition=record.partition, offset=record.offset, error=error[:200])

    async def _handle(self, record: ConsumerRecord, stop: asyncio.Event) -> bool:
        """Deliver one record; False only if we are stopping before Temporal accepted it."""
        try:
            message = InboundMessage.model_validate_json(record.value or b"")
            conversation_workflow_id(message.channel, message.conversation_key)
        except (ValidationError, ValueError) as exc:
            await self._to_dead_letter(record, f"invalid inbound record: {exc}")
            return True
        assert self.client is not None
        client = self.client

        parent = context_from_kafka_headers(record.headers)

        async def attempt() -> str:
            started = time.perf_counter()
            with _tracer.start_as_current_span("bridge.signal_with_start", context=parent) as span:
                span.set_attribute("crm.channel", message.channel)
                workflow_id = await signal_with_start(client, self.settings, message)
                span.set_attribute("temporal.workflow_id", workflow_id)
            SIGNAL_LATENCY.observe(time.perf_counter() - started)
            return workflow_id

        workflow_id = await retry_forever("bridge.signal", attempt, stop)
        if workflow_id is None:
            return False
        RECORDS.labels("signalled").inc()
        log.info(
            "bridge.signal_sent",
            workflow_id=workflow_id,
            message_id=message.external_message_id,
            partition=record.partition,
            offset=record.offset,
        )
        return True

    async def _partition(self, tp: TopicPartition, records: list[ConsumerRecord], stop: asyncio.Event) -> int | None:
        """Records of one partition; returns the next offset to commit.

        Records with the same key (one conversation) are signalled one after another, in offset
        order; different conversations in the batch are signalled concurrently, so one slow
        signal-with-start does not hold up every conversation behind it in the partition. Only
        the unbroken run of delivered offsets is committed: if we stop mid-batch, whatever comes
        after the first undelivered record is fetched again (and dropped by the workflow's dedupe
        if it had been delivered).
        """
        by_key: dict[bytes | None, list[ConsumerRecord]] = {}
        for record in records:
            by_key.setdefault(record.key, []).append(record)
        delivered: set[int] = set()
        limit = asyncio.Semaphore(MAX_CONCURRENT_SIGNALS_PER_PARTITION)

        async def conversation(batch: list[ConsumerRecord]) -> None:
            async with limit:
                for record in batch:
                    if not await self._handle(record, stop):
                        return
                    delivered.add(record.offset)

        await asyncio.gather(*(conversation(batch) for batch in by_key.values()))
        next_offset = None
        for record in sorted(records, key=lambda r: r.offset):
            if record.offset not in delivered:
                break
            next_offset = record.offset + 1
        return next_offset

    async def _update_lag(self) -> None:
        assert self.consumer is not None
        assigned = self.consumer.assignment()
        # A partition that moved to another bridge is that bridge's to report: a value left here
        # would stay frozen at its last lag and keep the lag alert firing.
        for tp in self._lag_reported - assigned:
            with contextlib.suppress(KeyError):
                LAG.remove(tp.topic, str(tp.partition))
        self._lag_reported &= assigned
        for tp in assigned:
            high = self.consumer.highwater(tp)
            if high is None:
                continue
            position = await self.consumer.position(tp)
            LAG.labels(tp.topic, str(tp.partition)).set(max(0, high - position))
            self._lag_reported.add(tp)

    async def run(self, stop: asyncio.Event) -> None:
        self.client = await retry_forever(
            "bridge.temporal_connect", lambda: connect_temporal(self.settings, identity="crm-fte-bridge"), stop
        )
        if self.client is None or not await retry_forever("bridge.kafka_connect", self._start_kafka, stop):
            return
        assert self.consumer is not None
        self.ready = True
        log.info(
            "bridge.started",
            topic=self.settings.kafka_topic_inbound,
            group=self.settings.kafka_consumer_group,
            session_timeout_ms=self.settings.kafka_session_timeout_ms,
        )
        try:
            while not stop.is_set():
                try:
                    batches = await self.consumer.getmany(timeout_ms=500, max_records=200)
                except Exception as exc:  # broker restarts surface here; aiokafka reconnects by itself
                    log.warning("bridge.fetch_failed", error=str(exc)[:200])
                    await asyncio.sleep(1)
                    continue
                if not batches:
                    await self._update_lag()
                    continue
                results = await asyncio.gather(*(self._partition(tp, recs, stop) for tp, recs in batches.items()))
                offsets = {tp: off for tp, off in zip(batches, results, strict=True) if off is not None}
                if offsets:
                    # If we are stopping mid-batch, only what Temporal accepted is committed; the
                    # rest is fetched again by whichever consumer owns the partition next.
                    await retry_forever("bridge.commit", functools.partial(self.consumer.commit, offsets), stop)
                await self._update_lag()
        finally:
            self.ready = False
            log.info("bridge.draining")
            await self.consumer.stop()
            if self.dlq is not None:
                await self.dlq.stop()
            log.info("bridge.stopped")


async def run_bridge(settings: Settings) -> None:
    configure_tracing(settings, "crm-fte-bridge")
    stop = install_stop_event()
    bridge = Bridge(settings)
    health_task = (
        asyncio.create_task(serve_health(settings.bridge_health_port, bridge.readiness, host=settings.health_host))
        if settings.bridge_health_port
        else None
    )
    try:
        await bridge.run(stop)
    finally:
        if health_task is not None:
            health_task.cancel()
            await asyncio.gather(health_task, return_exceptions=True)
