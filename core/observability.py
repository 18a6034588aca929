"""Prometheus metrics shared across processes, and OpenTelemetry tracing (off unless TRACING_ENABLED).

One trace follows a message: the webhook's HTTP span → the Kafka record (W3C trace context in its
headers) → the bridge's signal-with-start → the workflow and each activity (Temporal's
TracingInterceptor carries the context through Temporal headers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from prometheus_client import Counter, Histogram

from core.settings import Settings

ESCALATIONS = Counter("crm_fte_escalations_total", "Conversations handed to a human", ["reason"])
LLM_TOKENS = Counter("crm_fte_llm_tokens_total", "Model tokens used", ["model", "kind"])
LLM_COST = Counter("crm_fte_llm_cost_usd_total", "Estimated model cost in USD", ["model"])
ACTIVITY_SECONDS = Histogram(
    "crm_fte_activity_seconds",
    "Activity execution time",
    ["activity", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 90),
)
ACTIVITY_FAILURES = Counter("crm_fte_activity_failures_total", "Activity attempts that failed", ["activity", "error"])
# The SRE alerts of the Helm chart (templates/prometheusrule.yaml) read these three; each is counted
# once per event even when Temporal retries the activity that records it.
CONVERSATIONS_STARTED = Counter(
    "crm_fte_conversations_started_total",
    "Conversations whose first customer message the agent recorded (escalation rate = escalations / this)",
    ["channel"],
)
REPLY_LATENCY = Histogram(
    "crm_fte_reply_latency_seconds",
    "A turn's response latency, first message to reply or hand-off (agent_metrics' response_latency_ms)",
    ["channel"],
    # 3 s is ALERT_LATENCY_MS' default: a bucket edge there keeps the p95 exact near the threshold.
    buckets=(0.25, 0.5, 1, 2, 3, 4, 5, 7.5, 10, 15, 20, 30, 60, 120, 300),
)
SLA_BREACHES = Counter(
    "crm_fte_escalation_sla_breaches_total",
    "Escalations whose SLA deadline passed with no human answer, by the priority it was raised to "
    "(each missed deadline once)",
    ["priority"],
)

# How conversations ended (the automation rate an SRE or a manager watches), once per conversation.
CONVERSATION_OUTCOMES = Counter(
    "crm_fte_conversation_outcomes_total",
    "Conversations closed, by how they ended: resolved_by_ai, resolved_by_human, abandoned",
    ["channel", "outcome"],
)

# Customer satisfaction ratings (1-5), once per conversation.
CSAT_RATINGS = Counter("crm_fte_csat_ratings_total", "Customer satisfaction ratings, by score", ["channel", "score"])

_configured = False


def configure_tracing(settings: Settings, service_name: str) -> bool:
    """Install a tracer provider for this process when tracing is enabled; True if it is on."""
    global _configured
    if not settings.tracing_enabled:
        return False
    if _configured:
        return True
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if settings.otel_exporter_otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = settings.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    _configured = True
    return True


def flush_tracing(timeout_millis: int = 5000) -> None:
    """Export the spans still buffered (what the tracer provider's own exit hook would do)."""
    flush = getattr(trace.get_tracer_provider(), "force_flush", None)
    if callable(flush):
        flush(timeout_millis)


def temporal_interceptors(settings: Settings) -> list[Any]:
    """Temporal client interceptors: the tracing one when tracing is enabled."""
    if not settings.tracing_enabled:
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor()]


def kafka_trace_headers() -> list[tuple[str, bytes]]:
    """The current trace context as Kafka record headers (empty when there is no active span)."""
    carrier: dict[str, str] = {}
    inject(carrier)
    return [(key, value.encode()) for key, value in carrier.items()]


def context_from_kafka_headers(headers: Sequence[tuple[str, bytes]] | None) -> Any:
    carrier: Mapping[str, str] = {k: v.decode(errors="replace") for k, v in (headers or [])}
    return extract(carrier)


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)
