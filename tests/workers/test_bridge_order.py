"""The bridge signals different conversations concurrently but each conversation's messages in order.

Real broker, real Temporal, the real Bridge; no worker polls the task queue, so the workflows'
histories hold exactly the signals the bridge delivered, in the order Temporal accepted them.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer
from temporalio.client import Client

from core.kafka import client_kwargs, ensure_topics
from core.settings import Settings
from workers.bridge import Bridge
from workflows.contracts import InboundMessage, SenderIdentity, conversation_workflow_id


async def _signalled_ids(client: Client, workflow_id: str) -> list[str]:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    ids = []
    for event in history.events:
        if event.HasField("workflow_execution_signaled_event_attributes"):
            payload = event.workflow_execution_signaled_event_attributes.input.payloads[0]
            ids.append(InboundMessage.model_validate_json(payload.data).external_message_id)
    return ids


async def test_each_conversation_is_signalled_in_order_and_every_offset_is_committed(
    settings: Settings, client: Client
) -> None:
    suffix = uuid.uuid4().hex[:8]
    own = settings.model_copy(
        update={
            "kafka_topic_inbound": f"test.order.{suffix}",
            "kafka_topic_dead_letter": f"test.order.dlq.{suffix}",
            "kafka_consumer_group": f"bridge-order-{suffix}",
            "kafka_topic_partitions": 1,  # every conversation shares one partition
            "temporal_task_queue": f"no-worker-{suffix}",
        }
    )
    await ensure_topics(own)
    phones = [f"+1555{uuid.uuid4().int % 10**7:07d}" for _ in range(8)]
    per_phone = 6
    producer = AIOKafkaProducer(**client_kwargs(own))
    await producer.start()
    try:
        # Interleaved: a1 b1 c1 ... a2 b2 c2 ...; the bridge sees them in one or a few batches.
        for n in range(per_phone):
            for phone in phones:
                message = InboundMessage(
                    channel="whatsapp",
                    external_message_id=f"{phone}-{n}",
                    conversation_key=phone,
                    sender=SenderIdentity(phone=phone),
                    text=f"message {n}",
                    received_at=datetime.now(UTC),
                )
                await producer.send(
                    own.kafka_topic_inbound,
                    message.model_dump_json().encode(),
                    key=f"whatsapp:{phone}".encode(),
                )
        await producer.flush()
    finally:
        await producer.stop()

    stop = asyncio.Event()
    bridge = Bridge(own)
    task = asyncio.create_task(bridge.run(stop))
    workflow_ids = [conversation_workflow_id("whatsapp", phone) for phone in phones]
    try:
        deadline = asyncio.get_running_loop().time() + 60
        while True:
            try:
                seen = [await _signalled_ids(client, wid) for wid in workflow_ids]
            except Exception:
                seen = []
            if seen and all(len(ids) == per_phone for ids in seen):
                break
            assert asyncio.get_running_loop().time() < deadline, f"signals so far: {seen}"
            await asyncio.sleep(0.5)
        for phone, ids in zip(phones, seen, strict=True):
            assert ids == [f"{phone}-{n}" for n in range(per_phone)]
        # Everything delivered was committed: a new consumer in the group has nothing left to read.
        assert bridge.consumer is not None
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            committed = {tp: await bridge.consumer.committed(tp) for tp in bridge.consumer.assignment()}
            if committed and all(offset == len(phones) * per_phone for offset in committed.values()):
                break
            assert asyncio.get_running_loop().time() < deadline, committed
            await asyncio.sleep(0.5)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        for wid in workflow_ids:
            try:
                await client.get_workflow_handle(wid).terminate("test done")
            except Exception:
                pass
