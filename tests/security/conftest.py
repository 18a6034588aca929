"""A small, self-contained pipeline for the security suite: gateway (ASGI) → Kafka → bridge → worker.

Only the SaaS ends are fakes (Twilio, and optionally the model). The settings carry a set of
distinctive secret values so the tests can prove none of them ever reaches a customer or the model.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from twilio.request_validator import RequestValidator

from activities.deps import ActivityDeps
from core.kafka import ensure_topics
from core.settings import Settings
from gateway.app import create_app
from tests.fakes.openai_fake import OpenAIFake
from tests.fakes.twilio_fake import TwilioFake
from tests.workflows.helpers import make_worker
from workers.bridge import Bridge

PUBLIC = "http://gateway.test"
WHATSAPP_PATH = "/api/v1/webhooks/whatsapp"
STATUS_PATH = "/api/v1/webhooks/whatsapp/status"


def secret_values(tag: str) -> dict[str, str]:
    """Distinctive values for every secret setting; none of them may ever leave the system."""
    return {
        "openai_api_key": f"sk-SECRET-openai-{tag}",
        "twilio_auth_token": f"SECRETtwilio{tag}".ljust(32, "0"),
        "gmail_client_secret": f"SECRET-gmail-client-{tag}",
        "gmail_refresh_token": f"SECRET-gmail-refresh-{tag}",
        "gmail_pubsub_static_token": f"SECRET-pubsub-{tag}",
        "kafka_sasl_password": f"SECRET-kafka-{tag}",
    }


@dataclass
class SecurityStack:
    """Everything a security test talks to or inspects."""

    settings: Settings
    http: httpx.AsyncClient
    twilio: TwilioFake
    openai: OpenAIFake | None
    client: Client
    sessions: async_sessionmaker[AsyncSession]
    secrets: dict[str, str]

    def sign(self, params: dict[str, str], path: str = WHATSAPP_PATH, *, base: str = PUBLIC) -> str:
        """The X-Twilio-Signature Twilio would send for these form params at this URL."""
        return RequestValidator(self.twilio.auth_token).compute_signature(f"{base}{path}", params)

    def signed(self, params: dict[str, str], path: str = WHATSAPP_PATH) -> dict[str, Any]:
        """Keyword arguments for `http.post`: a request exactly as Twilio sends it."""
        return {"url": path, "data": params, "headers": {"X-Twilio-Signature": self.sign(params, path)}}


def new_phone() -> str:
    return f"+1555{uuid.uuid4().int % 10**7:07d}"


def whatsapp_params(phone: str, body: str, sid: str | None = None) -> dict[str, str]:
    return {
        "MessageSid": sid or f"SM{uuid.uuid4().hex}",
        "AccountSid": "AC" + "0" * 32,
        "From": f"whatsapp:{phone}",
        "To": "whatsapp:+14155550000",
        "Body": body,
        "NumMedia": "0",
        "ProfileName": "Sam",
        "WaId": phone.lstrip("+"),
    }


def stack_settings(base: Settings, twilio: TwilioFake, openai: OpenAIFake | None, tag: str) -> Settings:
    """Own topics, queue and consumer group; fakes for Twilio (and the model when given); secrets set."""
    secrets = secret_values(tag)
    update: dict[str, Any] = {
        "kafka_topic_inbound": f"test.security.{tag}",
        "kafka_topic_dead_letter": f"test.security.dlq.{tag}",
        "kafka_consumer_group": f"bridge-security-{tag}",
        "temporal_task_queue": f"security-{tag}",
        "twilio_account_sid": twilio.account_sid,
        "twilio_auth_token": SecretStr(twilio.auth_token),
        "twilio_whatsapp_from": "+14155550000",
        "twilio_api_base_url": twilio.base_url,
        "public_base_url": PUBLIC,
        "gmail_client_secret": SecretStr(secrets["gmail_client_secret"]),
        "gmail_refresh_token": SecretStr(secrets["gmail_refresh_token"]),
        "gmail_pubsub_static_token": SecretStr(secrets["gmail_pubsub_static_token"]),
        "kafka_sasl_password": SecretStr(secrets["kafka_sasl_password"]),
        # Generous limits: these tests are about content, the rate-limit tests set their own.
        "rate_limit_web_form": "1000/minute",
        "rate_limit_whatsapp": "1000/minute",
    }
    if openai is not None:
        update |= {"openai_api_key": SecretStr(secrets["openai_api_key"]), "openai_base_url": openai.api_base}
    else:
        update |= {"openai_api_key": None}
    return base.model_copy(update=update)


@asynccontextmanager
async def running_stack(
    base: Settings,
    client: Client,
    sessions: async_sessionmaker[AsyncSession],
    *,
    openai: OpenAIFake | None = None,
) -> AsyncIterator[SecurityStack]:
    """Gateway, bridge and production worker on fresh topics/queue; torn down in reverse order."""
    tag = uuid.uuid4().hex[:8]
    with TwilioFake(auth_token=secret_values(tag)["twilio_auth_token"]) as twilio:
        own = stack_settings(base, twilio, openai, tag)
        await ensure_topics(own)
        deps = ActivityDeps.create(own)
        stop = asyncio.Event()
        bridge_task = asyncio.create_task(Bridge(own).run(stop))
        try:
            async with AsyncExitStack() as exits:
                await exits.enter_async_context(make_worker(client, own, deps))
                manager = await exits.enter_async_context(LifespanManager(create_app(own)))
                http = await exits.enter_async_context(
                    httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url=PUBLIC)
                )
                yield SecurityStack(own, http, twilio, openai, client, sessions, secret_values(tag))
        finally:
            stop.set()
            await asyncio.wait_for(bridge_task, 30)
            await deps.close()


async def inbound_count(sessions: async_sessionmaker[AsyncSession], channel: str, external_id: str) -> int:
    async with sessions() as session:
        return int(
            await session.scalar(
                text(
                    "SELECT count(*) FROM messages WHERE channel = :ch AND external_message_id = :e "
                    "AND direction = 'inbound'"
                ),
                {"ch": channel, "e": external_id},
            )
            or 0
        )
