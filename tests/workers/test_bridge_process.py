"""The bridge as it is deployed: a `crm-fte bridge` subprocess against a real broker and Temporal.

- Killed with SIGKILL and started again: a killed consumer never sends LeaveGroup, so the broker
  keeps the dead membership until its session times out (KAFKA_SESSION_TIMEOUT_MS) and only then
  hands its partitions to the restarted process. The test measures how long a message produced
  after the restart waits to be signalled; the bound asserted is deliberately generous (the point
  is that the bridge resumes by itself) and the figure is printed for the record.
- The broker stopped for a while and started again: the bridge recovers, and its log carries one
  warning for the outage and one line for the recovery instead of aiokafka's per-retry errors.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from temporalio.client import Client
from temporalio.service import RPCError

from core.kafka import client_kwargs, ensure_topics
from core.settings import Settings
from workers.embedded import EmbeddedKafka, ManagedProcess, free_port
from workflows.contracts import INBOUND_SIGNAL, InboundMessage, SenderIdentity, conversation_workflow_id

pytestmark = [pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
RESUME_BOUND_S = 60.0


def bridge_env(
    settings: Settings, *, bootstrap: str, topic: str, group: str, task_queue: str, health_port: int
) -> dict[str, str]:
    """The bridge's environment: the session's Temporal, the given broker, its own topic, group and queue."""
    setting_names = {name.upper() for name in Settings.model_fields}
    inherited = {k: v for k, v in os.environ.items() if k.upper() not in setting_names and k != "PYTHONPATH"}
    return {
        **inherited,
        "TEMPORAL_ADDRESS": settings.temporal_address,
        "TEMPORAL_TASK_QUEUE": task_queue,  # no worker polls it: the workflows just wait, signals in history
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_ENABLE_IDEMPOTENCE": "false",
        "KAFKA_TOPIC_INBOUND": topic,
        "KAFKA_TOPIC_DEAD_LETTER": f"{topic}.dlq",
        "KAFKA_TOPIC_PARTITIONS": "3",
        "KAFKA_CONSUMER_GROUP": group,
        "BRIDGE_HEALTH_PORT": str(health_port),
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "json",
        "PYTHONPATH": str(REPO),
    }


def message(key: str) -> InboundMessage:
    return InboundMessage(
        channel="whatsapp",
        external_message_id=f"SM{uuid.uuid4().hex}",
        conversation_key=key,
        sender=SenderIdentity(phone=key),
        text="How do I rename a board?",
        received_at=datetime.now(UTC),
    )


async def signalled(client: Client, msg: InboundMessage) -> bool:
    """Whether the conversation's workflow history holds the inbound signal carrying this message."""
    handle = client.get_workflow_handle(conversation_workflow_id(msg.channel, msg.conversation_key))
    try:
        async for event in handle.fetch_history_events():
            attrs = event.workflow_execution_signaled_event_attributes
            if event.HasField("workflow_execution_signaled_event_attributes") and attrs.signal_name == INBOUND_SIGNAL:
                if msg.external_message_id.encode() in attrs.input.SerializeToString():
                    return True
    except RPCError:
        return False  # not started yet
    return False


async def wait_signalled(client: Client, msg: InboundMessage, proc: ManagedProcess, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if await signalled(client, msg):
            return time.monotonic() - started
        assert proc.alive(), f"the bridge exited with {proc.returncode()}: {proc.log_tail(10)}"
        await asyncio.sleep(0.1)
    raise AssertionError(f"not signalled within {timeout:.0f}s; bridge log:\n{proc.log_tail(15)}")


def spawn_bridge(env: dict[str, str], log_path: Path) -> ManagedProcess:
    proc = ManagedProcess(
        name="bridge",
        argv=[sys.executable, "-m", "workers.cli", "bridge"],
        log_path=log_path,
        env=env,
        cwd=log_path.parent,
    )
    proc.start()
    return proc


def json_lines(path: Path) -> list[dict[str, object]]:
    """The process's log as JSON objects (anything else it printed is kept as {"raw": line})."""
    records: list[dict[str, object]] = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            records.append({"raw": line})
    return records


async def terminate_all(client: Client, workflow_ids: list[str]) -> None:
    for workflow_id in workflow_ids:
        try:
            await client.get_workflow_handle(workflow_id).terminate("test over")
        except RPCError:
            pass


def own_settings(settings: Settings, suffix: str, bootstrap: str) -> Settings:
    topic = f"bridge-proc.inbound.{suffix}"
    return settings.model_copy(
        update={
            "kafka_bootstrap_servers": bootstrap,
            "kafka_topic_inbound": topic,
            "kafka_topic_dead_letter": f"{topic}.dlq",
            "kafka_consumer_group": f"bridge-proc-{suffix}",
        }
    )


async def test_a_bridge_killed_with_sigkill_resumes_after_restart(
    settings: Settings, client: Client, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    own = own_settings(settings, suffix, settings.kafka_bootstrap_servers)
    topic = own.kafka_topic_inbound
    await ensure_topics(own)
    env = bridge_env(
        settings,
        bootstrap=own.kafka_bootstrap_servers,
        topic=topic,
        group=own.kafka_consumer_group,
        task_queue=f"bridge-proc-{suffix}",
        health_port=free_port(),
    )

    def spawn(run: int) -> ManagedProcess:
        return spawn_bridge(env, tmp_path / f"bridge-{run}.log")

    producer = AIOKafkaProducer(**client_kwargs(own), acks="all")
    await producer.start()
    first = spawn(1)
    second: ManagedProcess | None = None
    workflow_ids: list[str] = []
    try:
        # One message per partition, so the first bridge owns (and has committed on) all three.
        warm = [message(f"+1555{suffix[:3]}{n:04d}") for n in range(3)]
        for partition, msg in enumerate(warm):
            await producer.send_and_wait(topic, msg.model_dump_json().encode(), partition=partition)
            workflow_ids.append(conversation_workflow_id(msg.channel, msg.conversation_key))
        for msg in warm:
            await wait_signalled(client, msg, first, timeout=RESUME_BOUND_S)

        first.send(signal.SIGKILL)
        assert first.popen is not None
        first.popen.wait(10)
        first.stop()

        restarted_at = time.monotonic()
        second = spawn(2)
        after = [message(f"+1556{suffix[:3]}{n:04d}") for n in range(3)]
        for partition, msg in enumerate(after):
            await producer.send_and_wait(topic, msg.model_dump_json().encode(), partition=partition)
            workflow_ids.append(conversation_workflow_id(msg.channel, msg.conversation_key))
        for msg in after:  # every partition: the dead member's whole assignment must move
            await wait_signalled(client, msg, second, timeout=RESUME_BOUND_S)
        resumed_s = time.monotonic() - restarted_at
        sys.stderr.write(f"\nbridge resume after kill -9: {resumed_s:.1f}s from restart to all partitions signalled\n")
        assert resumed_s < RESUME_BOUND_S
    finally:
        await producer.stop()
        for proc in (first, second):
            if proc is not None:
                proc.stop(10)
        await terminate_all(client, workflow_ids)


BROKER_DOWN_S = 15.0


async def test_a_broker_outage_is_one_warning_and_one_recovery_line_in_the_bridge_log(
    settings: Settings, client: Client, tmp_path: Path
) -> None:
    """Our own broker (stopping the session's would break other tests), stopped for 15 s."""
    broker = EmbeddedKafka(free_port(), tmp_path / "kafka-logs")
    broker.start()
    suffix = uuid.uuid4().hex[:8]
    own = own_settings(settings, suffix, broker.bootstrap_servers)
    topic = own.kafka_topic_inbound
    await ensure_topics(own)
    env = bridge_env(
        settings,
        bootstrap=broker.bootstrap_servers,
        topic=topic,
        group=own.kafka_consumer_group,
        task_queue=f"bridge-proc-{suffix}",
        health_port=free_port(),
    )
    log_path = tmp_path / "bridge.log"
    bridge = spawn_bridge(env, log_path)
    workflow_ids: list[str] = []

    async def deliver(key: str) -> None:
        msg = message(key)
        workflow_ids.append(conversation_workflow_id(msg.channel, msg.conversation_key))
        producer = AIOKafkaProducer(**client_kwargs(own), acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(topic, msg.model_dump_json().encode())
        finally:
            await producer.stop()
        await wait_signalled(client, msg, bridge, timeout=RESUME_BOUND_S)

    try:
        await deliver(f"+1557{suffix[:3]}0001")  # the bridge is up and owns the partitions
        await asyncio.to_thread(broker.stop)
        await asyncio.sleep(BROKER_DOWN_S)
        await asyncio.to_thread(broker.start)
        await ensure_topics(own)  # tansu keeps topics in memory: re-create them, as `crm-fte up` does
        await deliver(f"+1557{suffix[:3]}0002")  # recovered without help
        for _ in range(150):  # up to 30 s: the recovery line follows a few quiet seconds
            if "kafka.reachable_again" in log_path.read_text(errors="replace"):
                break
            await asyncio.sleep(0.2)
    finally:
        bridge.stop(10)
        await terminate_all(client, workflow_ids)
        await asyncio.to_thread(broker.stop)

    records = json_lines(log_path)
    raw = [r["raw"] for r in records if "raw" in r]
    aiokafka = [r for r in records if str(r.get("logger", "")).startswith("aiokafka")]
    sys.stderr.write(f"\nbroker down {BROKER_DOWN_S:.0f}s: {len(aiokafka)} aiokafka log line(s) from the bridge\n")
    for r in aiokafka:
        sys.stderr.write(f"  {r.get('level')} {r.get('event')} {str(r.get('detail', ''))[:120]}\n")
    assert not raw, f"non-JSON output (a traceback?): {raw[:5]}"
    unreachable = [r for r in aiokafka if r.get("event") == "kafka.unreachable"]
    assert len(unreachable) == 1, aiokafka
    assert unreachable[0]["level"] == "warning" and "exception" not in unreachable[0]
    # Whatever else aiokafka says around the outage (a rejoin after the group was lost) is a
    # handful of lines, not one per retry.
    assert len(aiokafka) <= 5, [r.get("event") for r in aiokafka]
    assert not [r for r in aiokafka if r.get("level") == "warning" and "exception" in r]
    recovered = [r for r in records if r.get("event") == "kafka.reachable_again"]
    assert len(recovered) == 1 and recovered[0]["level"] == "info", recovered


def test_a_heartbeat_not_below_the_session_timeout_is_a_one_line_configuration_error() -> None:
    env = {**os.environ, "KAFKA_SESSION_TIMEOUT_MS": "3000", "KAFKA_HEARTBEAT_INTERVAL_MS": "3000"}
    result = subprocess.run(
        [sys.executable, "-m", "workers.cli", "bridge"], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 2
    message = " ".join(result.stderr.split())  # the console wraps long lines
    assert "KAFKA_HEARTBEAT_INTERVAL_MS must be lower than KAFKA_SESSION_TIMEOUT_MS" in message
    assert "Traceback" not in result.stderr
