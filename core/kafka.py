"""Kafka client settings shared by the gateway's producer, the bridge's consumer and `up`.

Also the one place aiokafka's outage logging is tamed: with the broker down, aiokafka logs every
failed connect, metadata refresh, fetch and heartbeat (hundreds of lines a second across a
producer and a consumer). :class:`KafkaOutageLogFilter` turns that into one warning per outage
episode and one info line when the broker accepts connections again.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import ssl
import threading
import time
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    LeaderNotAvailableError,
    NodeNotReadyError,
    NotLeaderForPartitionError,
    RequestTimedOutError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)

from core.logging import get_logger
from core.settings import Settings

log = get_logger(__name__)


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """Connection and security options accepted by aiokafka's producer, consumer and admin client.

    Every aiokafka client here is built from these, so this is also where the process's aiokafka
    loggers get the outage filter (idempotent).
    """
    install_outage_log_filter(settings.kafka_bootstrap_servers)
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


def consumer_group_kwargs(settings: Settings) -> dict[str, Any]:
    """Group membership timing of the bridge's consumer (see KAFKA_SESSION_TIMEOUT_MS)."""
    return {
        "session_timeout_ms": settings.kafka_session_timeout_ms,
        "heartbeat_interval_ms": settings.kafka_heartbeat_interval_ms,
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


# ----------------------------------------------------------------------------- outage logging

# What aiokafka says, at WARNING and above, when it cannot reach the broker (or the broker has just
# come back without the topic or group yet): connect failures, metadata refreshes, fetches,
# produce responses, heartbeats and coordinator look-ups all failing the same way.
_OUTAGE_TEXT = re.compile(
    r"Unable connect to|Unable to (update|request) metadata|Unable to bootstrap|Connect call failed|"
    r"Connection refused|NodeNotReadyError|KafkaConnectionError|RequestTimedOutError|KafkaTimeoutError|"
    r"coordinator dead|Coordinator Request failed|GroupCoordinatorNotAvailable|NotCoordinatorForGroup|"
    r"Heartbeat session expired|Heartbeat send request failed|UnknownTopicOrPartition|LeaderNotAvailable|"
    r"NotLeaderForPartition",
    re.IGNORECASE,
)
_OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # ConnectionError and friends
    asyncio.TimeoutError,
    KafkaConnectionError,
    KafkaTimeoutError,
    NodeNotReadyError,
    RequestTimedOutError,
    UnknownTopicOrPartitionError,
    LeaderNotAvailableError,
    NotLeaderForPartitionError,
)


def _bootstrap_addresses(bootstrap_servers: str) -> list[tuple[str, int]]:
    addresses = []
    for item in bootstrap_servers.split(","):
        host, _, port = item.strip().rpartition(":")
        if host and port.isdigit():
            addresses.append((host.strip("[]"), int(port)))
    return addresses


class KafkaOutageLogFilter(logging.Filter):
    """One warning per broker outage (and a reminder every `remind_after_s`), one info line on recovery.

    Attached to every aiokafka logger. The first connectivity failure of an episode passes, rewritten
    as ``kafka.unreachable`` (a warning, without traceback, with aiokafka's message as `detail`); the
    rest of the episode's connectivity failures are counted and dropped. Anything else aiokafka
    reports passes untouched. While an episode lasts, a daemon thread probes the bootstrap servers
    with a plain TCP connect once a second; the episode ends (``kafka.reachable_again``) when one
    accepts *and* aiokafka has reported no connectivity failure for `quiet_s`, so a broker that is
    listening again but not serving yet (topics or the group coordinator still missing) does not
    flap between the two lines.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        probe_interval_s: float = 1.0,
        quiet_s: float = 3.0,
        remind_after_s: float = 300.0,
    ) -> None:
        super().__init__()
        self.bootstrap_servers = bootstrap_servers
        self.probe_interval_s = probe_interval_s
        self.quiet_s = quiet_s
        self.remind_after_s = remind_after_s
        self._lock = threading.Lock()
        self._since: float | None = None  # monotonic start of the current episode
        self._last_seen = 0.0  # monotonic time of the latest connectivity failure
        self._reminded_at = 0.0
        self._suppressed = 0
        self._probe: threading.Thread | None = None

    @property
    def in_outage(self) -> bool:
        return self._since is not None

    @staticmethod
    def is_outage_record(record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return False
        if record.exc_info and isinstance(record.exc_info[1], _OUTAGE_ERRORS):
            return True
        try:
            text = record.getMessage()
        except Exception:  # a malformed aiokafka record: let the handler report it as usual
            return False
        return bool(_OUTAGE_TEXT.search(text))

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.is_outage_record(record):
            return True
        now = time.monotonic()
        with self._lock:
            self._last_seen = now
            if self._since is None:
                self._since = self._reminded_at = now
                self._suppressed = 0
                event = "kafka.unreachable"
                self._start_probe()
            elif now - self._reminded_at >= self.remind_after_s:
                self._reminded_at = now
                event = "kafka.still_unreachable"
            else:
                self._suppressed += 1
                return False
            suppressed, down_s = self._suppressed, now - self._since
        detail = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            detail = f"{detail}: {type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        # Rewritten in place (every handler sees the same record): a warning, no traceback, and
        # the fields our structlog bridge renders from record attributes.
        record.msg, record.args = event, ()
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        record.detail = detail[:300]
        record.bootstrap = self.bootstrap_servers
        if event == "kafka.still_unreachable":
            record.down_s = round(down_s, 1)
            record.suppressed = suppressed
        return True

    def _start_probe(self) -> None:
        if self._probe is not None and self._probe.is_alive():
            return
        self._probe = threading.Thread(target=self._watch_for_recovery, name="kafka-outage-probe", daemon=True)
        self._probe.start()

    def _reachable(self) -> bool:
        for host, port in _bootstrap_addresses(self.bootstrap_servers):
            try:
                with socket.create_connection((host, port), timeout=min(1.0, self.probe_interval_s)):
                    return True
            except OSError:
                continue
        return False

    def _watch_for_recovery(self) -> None:
        while True:
            time.sleep(self.probe_interval_s)
            if time.monotonic() - self._last_seen < self.quiet_s or not self._reachable():
                continue
            with self._lock:
                if time.monotonic() - self._last_seen < self.quiet_s:
                    continue
                since, suppressed = self._since, self._suppressed
                self._since = None
            down_s = time.monotonic() - since if since is not None else 0.0
            log.info(
                "kafka.reachable_again",
                bootstrap=self.bootstrap_servers,
                down_s=round(down_s, 1),
                suppressed=suppressed,
            )
            return


_filter_lock = threading.Lock()
_outage_filter: KafkaOutageLogFilter | None = None


def install_outage_log_filter(bootstrap_servers: str) -> KafkaOutageLogFilter:
    """Attach one :class:`KafkaOutageLogFilter` to every aiokafka logger of this process (idempotent).

    A logger's filters only see records created on that logger, not those propagated from its
    children, so the filter goes on each ``aiokafka.*`` logger (they exist once aiokafka is imported).
    """
    global _outage_filter
    with _filter_lock:
        if _outage_filter is None:
            _outage_filter = KafkaOutageLogFilter(bootstrap_servers)
        else:
            _outage_filter.bootstrap_servers = bootstrap_servers
        names = [name for name in logging.root.manager.loggerDict if name == "aiokafka" or name.startswith("aiokafka.")]
        for name in ["aiokafka", *names]:
            logger = logging.getLogger(name)
            if _outage_filter not in logger.filters:
                logger.addFilter(_outage_filter)
        return _outage_filter
