"""Long-lived connections the gateway holds, each reconnecting on demand.

A dependency that is down at start-up must not stop the gateway from starting (it reports 503
on /api/v1/health instead and retries on the next request), so the Kafka producer and the
Temporal client are created lazily under a lock.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client

from core.kafka import producer_kwargs
from core.logging import get_logger
from core.settings import Settings
from core.temporal import connect_temporal
from gateway.ratelimit import SenderLimiter

log = get_logger(__name__)


@dataclass
class KafkaProducerHolder:
    settings: Settings
    _producer: AIOKafkaProducer | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def get(self) -> AIOKafkaProducer:
        """The started producer; starts (or restarts) it if needed, raising if the broker is down."""
        if self._producer is not None:
            return self._producer
        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(**producer_kwargs(self.settings))
                try:
                    await producer.start()
                except Exception:
                    await producer.stop()
                    raise
                self._producer = producer
                log.info("kafka.producer_started", bootstrap=self.settings.kafka_bootstrap_servers)
        return self._producer

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None


@dataclass
class TemporalHolder:
    settings: Settings
    _client: Client | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def get(self) -> Client:
        """The connected client; the SDK reconnects by itself once a first connection succeeded."""
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                self._client = await connect_temporal(self.settings, identity="crm-fte-gateway")
        return self._client


@dataclass
class Resources:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    kafka: KafkaProducerHolder
    temporal: TemporalHolder
    limiter: SenderLimiter
