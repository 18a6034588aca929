"""One trace from webhook to reply; Prometheus metrics on the gateway and the worker."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from asgi_lifespan import LifespanManager
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import generate_latest
from temporalio.worker import Worker

from activities.deps import ActivityDeps
from core import observability
from core.kafka import ensure_topics
from core.settings import Settings
from core.temporal import connect_temporal
from gateway.app import create_app
from tests.workflows.helpers import eventually
from workers.bridge import Bridge
from workers.metrics import MetricsInterceptor
from workers.registry import activity_callables, workflow_classes, workflow_runner


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    observability._configured = True  # the provider above stands in for the OTLP one
    return exporter


async def test_one_trace_follows_a_message_from_webhook_to_reply(
    spans: InMemorySpanExporter, settings: Settings, kb_ingested: None, client: object
) -> None:  # `client` registers the custom search attributes
    suffix = uuid.uuid4().hex[:8]
    own = settings.model_copy(
        update={
            "tracing_enabled": True,
            "kafka_topic_inbound": f"test.trace.{suffix}",
            "kafka_consumer_group": f"trace-{suffix}",
            "temporal_task_queue": f"trace-{suffix}",
        }
    )
    await ensure_topics(own)
    traced = await connect_temporal(own)  # with Temporal's TracingInterceptor
    deps = ActivityDeps.create(own)
    stop = asyncio.Event()
    bridge = asyncio.create_task(Bridge(own).run(stop))
    worker = Worker(
        traced,
        task_queue=own.temporal_task_queue,
        workflows=workflow_classes(),
        workflow_runner=workflow_runner(),
        activities=activity_callables(deps),
        interceptors=[MetricsInterceptor()],
    )
    try:
        async with worker, LifespanManager(create_app(own)) as manager:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://gw") as http:
                email = f"trace.{suffix}@example.com"
                form = {
                    "name": "Tracy",
                    "email": email,
                    "subject": "Trace me",
                    "category": "how_to",
                    "message": "How do I connect Google Calendar?",
                }
                ticket = (await http.post("/api/v1/support/form", json=form)).json()["ticket_id"]

                async def replied() -> bool:
                    data = (await http.get(f"/api/v1/tickets/{ticket}", params={"email": email})).json()
                    return any(
                        m["direction"] == "outbound" and m["delivery_status"] == "delivered" for m in data["messages"]
                    )

                await eventually(replied, timeout=45)
                metrics = (await http.get("/metrics")).text
    finally:
        stop.set()
        await asyncio.wait_for(bridge, 30)
        await deps.close()

    finished = spans.get_finished_spans()
    post = next(s for s in finished if s.name.startswith("POST /api/v1/support/form") and s.parent is None)
    in_trace = {s.name for s in finished if s.context.trace_id == post.context.trace_id}
    assert "bridge.signal_with_start" in in_trace
    assert any(name.startswith("SignalWithStartWorkflow:ConversationWorkflow") for name in in_trace), in_trace
    assert any(name.startswith("RunWorkflow:ConversationWorkflow") for name in in_trace), in_trace
    assert any(name.startswith("RunActivity:agent_step") for name in in_trace), in_trace
    assert any(name.startswith("RunActivity:send_web_form_reply") for name in in_trace), in_trace

    assert 'crm_fte_http_request_seconds_count{method="POST",route="/api/v1/support/form",status="201"}' in metrics
    assert "crm_fte_kafka_produce_seconds" in metrics
    worker_metrics = generate_latest().decode()  # the worker ran in this process
    assert 'crm_fte_activity_seconds_count{activity="agent_step",outcome="completed"}' in worker_metrics
    assert "crm_fte_bridge_signal_seconds" in worker_metrics
