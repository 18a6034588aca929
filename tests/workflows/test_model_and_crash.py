"""The real `openai` client against a local OpenAI-compatible fake; a worker killed mid-turn."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from activities.deps import ActivityDeps
from core.settings import Settings
from tests.fakes.openai_fake import ChatError, ChatReply, OpenAIFake, ToolCall
from tests.fakes.twilio_fake import TwilioFake
from tests.workflows.helpers import eventually, inbound, make_worker, messages_of
from workers.bridge import signal_with_start
from workflows.contracts import ConversationState


@pytest.fixture
async def model_worker(
    client: Client, settings: Settings, kb_ingested: None
) -> AsyncIterator[tuple[OpenAIFake, Settings]]:
    with OpenAIFake() as fake:
        own = settings.model_copy(
            update={
                "temporal_task_queue": f"llm-{uuid.uuid4().hex[:8]}",
                "openai_api_key": SecretStr("sk-test"),
                "openai_base_url": fake.api_base,
                "openai_model": "gpt-4o",
            }
        )
        deps = ActivityDeps.create(own)
        try:
            async with make_worker(client, own, deps, max_cached_workflows=0):
                yield fake, own
        finally:
            await deps.close()


async def _wait_sent(sessions: async_sessionmaker[AsyncSession], workflow_id: str, n: int = 1) -> list[dict[str, Any]]:
    async def sent() -> list[dict[str, Any]] | None:
        rows = await messages_of(sessions, workflow_id)
        out = [r for r in rows if r["direction"] == "outbound" and r["delivery_status"] != "pending"]
        return rows if len(out) >= n else None

    return await eventually(sent)


async def test_model_tool_calls_run_as_activities_and_the_answer_is_sent(
    model_worker: tuple[OpenAIFake, Settings], client: Client, sessions: async_sessionmaker[AsyncSession]
) -> None:
    fake, own = model_worker
    fake.push(
        ChatReply(tool_calls=[ToolCall("search_knowledge_base", {"query": "connect slack"})]),
        ChatReply(tool_calls=[ToolCall("get_customer_history", {})]),
        ChatReply(
            tool_calls=[ToolCall("send_response", {"message": "Go to Settings, then Integrations, then Slack."})]
        ),
    )
    workflow_id = await signal_with_start(client, own, inbound("web_form", "How do I connect Slack?"))
    rows = await _wait_sent(sessions, workflow_id)
    reply = [r for r in rows if r["direction"] == "outbound"]
    assert len(reply) == 1 and "Settings, then Integrations, then Slack" in str(reply[0]["content"])
    assert len(fake.chat_requests) == 3
    first, second = fake.chat_requests[0], fake.chat_requests[1]
    assert first["messages"][0]["role"] == "system" and "TechCorp" in first["messages"][0]["content"]
    assert {t["function"]["name"] for t in first["tools"]} == {
        "search_knowledge_base",
        "create_ticket",
        "get_customer_history",
        "escalate_to_human",
        "send_response",
    }
    tool_message = next(m for m in second["messages"] if m["role"] == "tool")
    assert "slack" in tool_message["content"].lower()  # the KB passages went back to the model


async def test_rate_limit_is_retried_and_a_rejected_request_hands_off(
    model_worker: tuple[OpenAIFake, Settings], client: Client, sessions: async_sessionmaker[AsyncSession]
) -> None:
    fake, own = model_worker
    fake.push(ChatError.rate_limit(0.1), ChatReply(tool_calls=[ToolCall("send_response", {"message": "Done."})]))
    ok_id = await signal_with_start(client, own, inbound("web_form", "How do I archive a board?"))
    await _wait_sent(sessions, ok_id)
    assert len(fake.chat_requests) == 2  # the 429 was retried by Temporal, not by the client

    fake.push(ChatError.bad_request("This model's request was invalid."))
    bad_id = await signal_with_start(client, own, inbound("web_form", "How do I rename a project?"))

    async def handed_off() -> ConversationState | None:
        state = await client.get_workflow_handle(bad_id).query("state", result_type=ConversationState)
        return state if state.status == "escalated" else None

    state = await eventually(handed_off)
    assert state.escalation is not None and state.escalation.reason == "model_error"
    assert len(fake.chat_requests) == 3  # a rejected request is not retried


async def test_a_reply_that_states_a_price_never_reaches_the_customer(
    model_worker: tuple[OpenAIFake, Settings], client: Client, sessions: async_sessionmaker[AsyncSession]
) -> None:
    fake, own = model_worker
    fake.push(ChatReply(tool_calls=[ToolCall("send_response", {"message": "Sure! Pro costs $12 per user per month."})]))
    workflow_id = await signal_with_start(client, own, inbound("web_form", "What do I get on the Pro plan?"))

    async def escalated() -> ConversationState | None:
        state = await client.get_workflow_handle(workflow_id).query("state", result_type=ConversationState)
        return state if state.status == "escalated" else None

    state = await eventually(escalated)
    assert state.escalation is not None and state.escalation.reason == "unsafe_output"
    rows = await _wait_sent(sessions, workflow_id)
    assert all("$12" not in str(r["content"]) for r in rows if r["direction"] == "outbound")


def _worker_process(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


async def test_worker_killed_between_llm_step_and_send_sends_exactly_one_reply(
    client: Client, settings: Settings, sessions: async_sessionmaker[AsyncSession], kb_ingested: None
) -> None:
    answered = threading.Event()

    def responder(body: dict[str, Any]) -> ChatReply:
        answered.set()  # the model has answered: the worker is now between the LLM step and the send
        return ChatReply(tool_calls=[ToolCall("send_response", {"message": "Tap the bell icon to mute a board."})])

    with OpenAIFake(responder=responder) as openai_fake, TwilioFake() as twilio:
        queue = f"crash-{uuid.uuid4().hex[:8]}"
        env = {
            **os.environ,
            "DATABASE_URL": settings.database_dsn,
            "TEMPORAL_ADDRESS": settings.temporal_address,
            "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            "TEMPORAL_TASK_QUEUE": queue,
            "OPENAI_API_KEY": "sk-test",
            "OPENAI_BASE_URL": openai_fake.api_base,
            "TWILIO_ACCOUNT_SID": twilio.account_sid,
            "TWILIO_AUTH_TOKEN": twilio.auth_token,
            "TWILIO_WHATSAPP_FROM": "+14155550000",
            "TWILIO_API_BASE_URL": twilio.base_url,
            "LOG_LEVEL": "WARNING",
        }
        own = settings.model_copy(update={"temporal_task_queue": queue})
        worker = _worker_process(env)
        try:
            message = inbound("whatsapp", "how do I mute notifications for one board?")
            workflow_id = await signal_with_start(client, own, message)
            assert await asyncio.to_thread(answered.wait, 60), "the model was never called"
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
            sent_before_restart = len(twilio.messages)
            worker = _worker_process(env)
            rows = await _wait_sent(sessions, workflow_id)
            await asyncio.sleep(2)  # a duplicate send, if any, would land now
            outbound = [r for r in await messages_of(sessions, workflow_id) if r["direction"] == "outbound"]
            assert len(outbound) == 1, rows
            assert len(twilio.messages) == 1, f"{len(twilio.messages)} sends (before restart: {sent_before_restart})"
            sent = twilio.messages[0]
            assert sent.to == f"whatsapp:{message.sender.phone}" and "bell icon" in sent.body
            assert outbound[0]["delivery_status"] == "queued"
            assert 1 <= len(openai_fake.chat_requests) <= 2  # re-asked only if the kill beat the step's completion
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
