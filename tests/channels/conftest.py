"""The whole pipeline in one test process: gateway (ASGI) → real Kafka → bridge → real Temporal worker.

Only the SaaS ends are fakes: Twilio (HTTP fake, official client) and the model (OpenAI fake).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from pydantic import SecretStr
from temporalio.client import Client

from activities.deps import ActivityDeps
from core.kafka import ensure_topics
from core.settings import Settings
from gateway.app import create_app
from tests.fakes.openai_fake import ChatReply, OpenAIFake, ToolCall
from tests.fakes.twilio_fake import TwilioFake
from tests.workflows.helpers import make_worker
from workers.bridge import Bridge

PUBLIC = "http://gateway.test"
LONG_MARKER = "LONGANSWER"


def scripted_model(body: dict[str, Any]) -> ChatReply:
    """A model that answers every question in one send_response (a long one when asked to)."""
    asked = " ".join(str(m.get("content") or "") for m in body["messages"] if m["role"] == "user")
    if LONG_MARKER in asked:
        sentences = [
            f"Step {i}: open the board menu and choose the option numbered {i} to continue." for i in range(60)
        ]
        return ChatReply(tool_calls=[ToolCall("send_response", {"message": " ".join(sentences)})])
    return ChatReply(tool_calls=[ToolCall("send_response", {"message": "Thanks for asking! Here is how to do it."})])


@dataclass
class Pipeline:
    settings: Settings
    http: httpx.AsyncClient
    twilio: TwilioFake
    openai: OpenAIFake
    client: Client


@pytest.fixture
async def pipeline(settings: Settings, client: Client, kb_ingested: None) -> AsyncIterator[Pipeline]:
    suffix = uuid.uuid4().hex[:8]
    with TwilioFake() as twilio, OpenAIFake(responder=scripted_model) as model:
        own = settings.model_copy(
            update={
                "kafka_topic_inbound": f"test.channels.{suffix}",
                "kafka_topic_dead_letter": f"test.channels.dlq.{suffix}",
                "kafka_consumer_group": f"bridge-{suffix}",
                "temporal_task_queue": f"channels-{suffix}",
                "twilio_account_sid": twilio.account_sid,
                "twilio_auth_token": SecretStr(twilio.auth_token),
                "twilio_whatsapp_from": "+14155550000",
                "twilio_api_base_url": twilio.base_url,
                "public_base_url": PUBLIC,
                "openai_api_key": SecretStr("sk-test"),
                "openai_base_url": model.api_base,
            }
        )
        await ensure_topics(own)
        deps = ActivityDeps.create(own)
        stop = asyncio.Event()
        bridge = Bridge(own)
        bridge_task = asyncio.create_task(bridge.run(stop))
        app = create_app(own)
        try:
            async with make_worker(client, own, deps), LifespanManager(app) as manager:
                transport = httpx.ASGITransport(app=manager.app)
                async with httpx.AsyncClient(transport=transport, base_url=PUBLIC) as http:
                    yield Pipeline(own, http, twilio, model, client)
        finally:
            stop.set()
            await asyncio.wait_for(bridge_task, 30)
            await deps.close()
