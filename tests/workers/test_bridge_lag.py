"""The bridge's lag gauge reports only the partitions the bridge owns now.

A partition that moved to another bridge (a rebalance) must leave this bridge's /metrics: a value
left behind stays frozen at its last lag, and the chart's CrmFteBridgeLagHigh alert would keep
firing on a partition nobody is behind on.
"""

from __future__ import annotations

from aiokafka import TopicPartition
from prometheus_client import REGISTRY

from core.settings import Settings
from workers.bridge import Bridge


class _Consumer:
    """The three calls `_update_lag` makes on an AIOKafkaConsumer."""

    def __init__(self, assigned: set[TopicPartition], high: int, position: int) -> None:
        self.assigned, self.high, self.at = assigned, high, position

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def highwater(self, tp: TopicPartition) -> int:
        return self.high

    async def position(self, tp: TopicPartition) -> int:
        return self.at


def lag(topic: str, partition: int) -> float | None:
    return REGISTRY.get_sample_value("crm_fte_bridge_lag", {"topic": topic, "partition": str(partition)})


async def test_a_revoked_partition_leaves_the_lag_gauge() -> None:
    topic = "test.lag.revoked"
    bridge = Bridge(Settings(_env_file=None))  # type: ignore[call-arg]
    zero, one = TopicPartition(topic, 0), TopicPartition(topic, 1)
    bridge.consumer = _Consumer({zero, one}, high=500, position=120)  # type: ignore[assignment]
    await bridge._update_lag()
    assert (lag(topic, 0), lag(topic, 1)) == (380, 380)

    bridge.consumer = _Consumer({one}, high=500, position=450)  # type: ignore[assignment]
    await bridge._update_lag()
    assert lag(topic, 0) is None  # another bridge owns it now and reports it
    assert lag(topic, 1) == 50

    bridge.consumer = _Consumer({zero, one}, high=500, position=500)  # type: ignore[assignment]
    await bridge._update_lag()
    assert (lag(topic, 0), lag(topic, 1)) == (0, 0)
