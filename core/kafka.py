"""Kafka client settings shared by the gateway's producer, the bridge's consumer and `up`."""

from __future__ import annotations

import ssl
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from core.settings import Settings


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """Connection and security options accepted by aiokafka's producer, consumer and admin client."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
        "client_id": "crm-fte",
    }
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        kwargs["ssl_context"] = ssl.create_default_context(cafile=settings.kafka_ssl_ca_path)
    if settings.kafka_security_protocol.startswith("SASL"):
        kwargs["sasl_mechanism"] = settings.kafka_sasl_mechanism or "PLAIN"
        kwargs["sasl_plain_username"] = settings.kafka_sasl_username
        kwargs["sasl_plain_password"] = (
            settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None
        )
    return kwargs


def producer_kwargs(settings: Settings) -> dict[str, Any]:
    """acks=all always; idempotence where the broker supports it (Apache Kafka, not tansu)."""
    return {
        **client_kwargs(settings),
        "acks": "all",
        "enable_idempotence": settings.kafka_enable_idempotence,
        # A webhook must answer within the provider's deadline: fail fast and let it retry.
        "request_timeout_ms": 5000,
        "linger_ms": 0,
    }


async def ensure_topics(settings: Settings) -> list[str]:
    """Create the inbound and dead-letter topics if missing; returns the ones it created."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings), request_timeout_ms=10000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [settings.kafka_topic_inbound, settings.kafka_topic_dead_letter]
        created = []
        for name in wanted:
            if name in existing:
                continue
            try:
                await admin.create_topics(
                    [
                        NewTopic(
                            name,
                            num_partitions=settings.kafka_topic_partitions,
                            replication_factor=settings.kafka_topic_replication_factor,
                        )
                    ]
                )
                created.append(name)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        await admin.close()
