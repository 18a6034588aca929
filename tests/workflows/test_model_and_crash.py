"""The real `openai` client against a local OpenAI-compatible fake; a worker killed mid-turn.

The fake runs with `compat_checks`: it also rejects what stricter OpenAI-compatible servers reject
(null assistant content, non-JSON arguments sent back), so every conversation below proves the
requests would pass there too. Each thing real models do (parallel tool calls, a refusal, plain
text, malformed arguments, a clarifying question) runs through the real workflow.
"""

from __future__ import annotations

import asyncio
import json
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
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowExecutionStatus

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
    with OpenAIFake(compat_checks=True) as fake, TwilioFake() as twilio:
        own = settings.model_copy(
            update={
                "temporal_task_queue": f"llm-{uuid.uuid4().hex[:8]}",
                "openai_api_key": SecretStr("sk-test"),
                "openai_base_url": fake.api_base,
                "openai_model": "gpt-4o",
                # These tests pin the agent's exact model calls; the classifier's part of a turn is
                # tested in test_inbound_classifier_adds_an_escalation_the_rules_missed below.
                "inbound_classifier_enabled": False,
                # WhatsApp conversations send through the Twilio fake.
                "twilio_account_sid": twilio.account_sid,
                "twilio_auth_token": SecretStr(twilio.auth_token),
                "twilio_whatsapp_from": "+14155550000",
                "twilio_api_base_url": twilio.base_url,
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
            "INBOUND_CLASSIFIER_ENABLED": "false",
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


# ----------------------------------------------------------------------------- what real models do


async def _agent_steps(sessions: async_sessionmaker[AsyncSession], workflow_id: str) -> list[dict[str, Any]]:
    async with sessions() as session:
        rows = await session.execute(
            text(
                "SELECT s.turn, s.step, s.role, s.tool_call_id, s.payload, s.prompt_tokens, s.completion_tokens "
                "FROM agent_steps s JOIN conversations c ON c.id = s.conversation_id "
                "WHERE c.workflow_id = :w ORDER BY s.turn, s.step, s.role, s.created_at"
            ),
            {"w": workflow_id},
        )
        return [dict(r._mapping) for r in rows]


async def _escalated(client: Client, workflow_id: str) -> ConversationState:
    async def check() -> ConversationState | None:
        state = await client.get_workflow_handle(workflow_id).query("state", result_type=ConversationState)
        return state if state.status == "escalated" else None

    return await eventually(check)


def _outbound(rows: list[dict[str, Any]]) -> list[str]:
    return [str(r["content"]) for r in rows if r["direction"] == "outbound"]


async def test_parallel_tool_calls_as_compatible_servers_send_them_all_run_and_all_results_go_back(
    model_worker: tuple[OpenAIFake, Settings], client: Client, sessions: async_sessionmaker[AsyncSession]
) -> None:
    fake, own = model_worker
    fake.push(
        ChatReply(
            tool_calls=[
                # An empty id (llama.cpp has sent these), no `type` with the arguments as an object,
                # and an ordinary call: three calls in one message.
                ToolCall("search_knowledge_base", {"query": "google calendar sync stopped"}, compat_id=""),
                ToolCall(
                    "search_knowledge_base",
                    {"query": "slack notifications"},
                    compat_omit_type=True,
                    compat_arguments_as_object=True,
                ),
                ToolCall("get_customer_history", {}, id="call_hist"),
            ],
            prompt_tokens=900,
            completion_tokens=40,
        ),
    )
    cited: list[str] = []

    def cite_the_section_used(body: dict[str, Any]) -> ChatReply:
        # The model answers from the first section its first search returned and cites that section's link.
        first_result = next(m for m in body["messages"] if m["role"] == "tool")
        cited.append(json.loads(first_result["content"])["hits"][0]["url"])
        message = f"Reconnect Google Calendar under Integrations. More: {cited[-1]}"
        # A server that reports no usage: its tokens count as zero, nothing breaks.
        return ChatReply(tool_calls=[ToolCall("send_response", {"message": message})], omit_usage=True)

    fake.responder = cite_the_section_used
    workflow_id = await signal_with_start(client, own, inbound("web_form", "My calendar stopped syncing"))
    rows = await _wait_sent(sessions, workflow_id)
    assert cited and any("Reconnect Google Calendar" in c and cited[0] in c for c in _outbound(rows))

    assert len(fake.chat_requests) == 2
    first = fake.chat_requests[0]
    # Only what every compatible server accepts: no tool_choice, `max_tokens` behind OPENAI_BASE_URL.
    assert "tool_choice" not in first and "parallel_tool_calls" not in first
    assert first["max_tokens"] == 1200 and "max_completion_tokens" not in first
    second = fake.chat_requests[1]["messages"]
    assistant_at = next(i for i, m in enumerate(second) if m["role"] == "assistant" and m.get("tool_calls"))
    sent_calls = second[assistant_at]["tool_calls"]
    ids = [c["id"] for c in sent_calls]
    assert len(ids) == 3 and len(set(ids)) == 3 and all(ids) and ids[2] == "call_hist"
    assert [c["function"]["name"] for c in sent_calls] == [
        "search_knowledge_base",
        "search_knowledge_base",
        "get_customer_history",
    ]
    tool_messages = second[assistant_at + 1 : assistant_at + 4]
    assert [m["role"] for m in tool_messages] == ["tool"] * 3
    assert [m["tool_call_id"] for m in tool_messages] == ids  # each result right after, in the model's order
    calendar, slack = json.loads(tool_messages[0]["content"]), json.loads(tool_messages[1]["content"])
    assert calendar["query"] == "google calendar sync stopped" and slack["query"] == "slack notifications"
    for result in (calendar, slack):
        assert result["hits"], result
        for hit in result["hits"]:
            # Sections with their heading, each with its title and the help-centre link the reply cites.
            assert hit["title"] and hit["content"]
            assert hit["url"].startswith(f"http://{own.gateway_host}:{own.gateway_port}/help/{hit['article_id']}")
            if hit["section"]:
                assert hit["section"].split(" > ")[-1] in hit["content"] and "#" in hit["url"]
    assert any(h["article_id"] == "google-calendar-integration" for h in calendar["hits"])
    assert "previous_messages" in json.loads(tool_messages[2]["content"])

    steps = await _agent_steps(sessions, workflow_id)
    assert sorted(r["tool_call_id"] for r in steps if r["role"] == "tool") == sorted(ids)
    assistant_steps = [r for r in steps if r["role"] == "assistant"]
    assert [(r["prompt_tokens"], r["completion_tokens"]) for r in assistant_steps] == [(900, 40), (0, 0)]


async def test_malformed_tool_arguments_get_one_repair_and_the_repaired_call_answers(
    model_worker: tuple[OpenAIFake, Settings], client: Client, sessions: async_sessionmaker[AsyncSession]
) -> None:
    fake, own = model_worker
    fake.push_malformed_tool_call("search_knowledge_base", '{"query": "export my boards to CSV')
    fake.push(
        ChatReply(tool_calls=[ToolCall("search_knowledge_base", {"query": "export boards csv"})]),
        ChatReply(tool_calls=[ToolCall("send_response", {"message": "Open the board menu and choose Export."})]),
    )
    workflow_id = await signal_with_start(client, own, inbound("web_form", "how do i export a board to csv"))
    rows = await _wait_sent(sessions, workflow_id)
    assert any("choose Export" in c for c in _outbound(rows))
    assert len(fake.chat_requests) == 3

    repair = fake.chat_requests[1]["messages"]
    assistant = next(m for m in repair if m["role"] == "assistant" and m.get("tool_calls"))
    assert assistant["tool_calls"][0]["function"]["arguments"] == "{}"  # broken JSON is not sent back
    told = json.loads(next(m for m in repair if m["role"] == "tool")["content"])
    assert told["error"] == "invalid_tool_call" and "not valid JSON" in told["problem"]
    assert told["your_arguments"] == '{"query": "export my boards to CSV'
    state = await client.get_workflow_handle(workflow_id).query("state", result_type=ConversationState)
    assert state.status == "active" and state.escalation is None


async def test_malformed_tool_arguments_twice_hand_off_cleanly(
    model_worker: tuple[OpenAIFake, Settings], client: Client, sessions: async_sessionmaker[AsyncSession]
) -> None:
    fake, own = model_worker
    fake.push_malformed_tool_call("search_knowledge_base", '{"query": "webhooks')
    fake.push_malformed_tool_call("send_response", '{"message": "Webhooks are under')
    workflow_id = await signal_with_start(client, own, inbound("web_form", "where do I set up webhooks"))
    state = await _escalated(client, workflow_id)
    assert state.escalation is not None and state.escalation.reason == "model_error"
    assert len(fake.chat_requests) == 2  # one repair attempt, not retried further
    description = await client.get_workflow_handle(workflow_id).describe()
    assert description.status == WorkflowExecutionStatus.RUNNING  # handed off, never a failed workflow
    rows = await _wait_sent(sessions, workflow_id)
    outbound = _outbound(rows)
    assert len(outbound) == 1 and "Webhooks are under" not in outbound[0]  # the holding message only
    # Both steps are recorded with their tokens, the second one too (it was spent before the hand-off).
    assert len([r for r in await _agent_steps(sessions, workflow_id) if r["role"] == "assistant"]) == 2


async def test_a_refusal_hands_off_and_never_reaches_the_customer(
    model_worker: tuple[OpenAIFake, Settings], client: Client, sessions: async_sessionmaker[AsyncSession]
) -> None:
    fake, own = model_worker
    fake.push_refusal("I'm sorry, but I can't assist with that request.")
    # Off-topic, for the model to refuse. (The earlier "who should i vote for in the election" is now
    # handed off before the model: the learned guardrail layer reads it as pricing, a wrong reason.)
    workflow_id = await signal_with_start(client, own, inbound("whatsapp", "can you do my maths homework"))
    state = await _escalated(client, workflow_id)
    assert state.escalation is not None and state.escalation.reason == "agent_requested"
    rows = await _wait_sent(sessions, workflow_id)
    assert all("can't assist" not in c for c in _outbound(rows))
    [assistant] = [r for r in await _agent_steps(sessions, workflow_id) if r["role"] == "assistant"]
    [call] = assistant["payload"]["tool_calls"]
    assert call["name"] == "escalate_to_human" and "can't assist" in json.loads(call["arguments"])["note"]


async def test_plain_text_without_a_tool_call_is_an_answer_that_passes_the_reply_check(
    model_worker: tuple[OpenAIFake, Settings], client: Client, sessions: async_sessionmaker[AsyncSession]
) -> None:
    fake, own = model_worker
    fake.push(ChatReply(content="Tap the bell icon on the board and choose Mute."))
    ok_id = await signal_with_start(client, own, inbound("web_form", "how do I mute one board"))
    rows = await _wait_sent(sessions, ok_id)
    assert any("choose Mute" in c for c in _outbound(rows))

    fake.push(ChatReply(content="Sure, the Pro plan is $12 per user per month."))
    priced_id = await signal_with_start(client, own, inbound("web_form", "how do I pin a board to the sidebar"))
    state = await _escalated(client, priced_id)
    assert state.escalation is not None and state.escalation.reason == "unsafe_output"
    assert all("$12" not in c for c in _outbound(await _wait_sent(sessions, priced_id)))


async def test_a_clarifying_question_waits_for_the_customer_and_the_next_step_sees_both(
    model_worker: tuple[OpenAIFake, Settings], client: Client, sessions: async_sessionmaker[AsyncSession]
) -> None:
    fake, own = model_worker
    question = "Do you mean the Slack integration or the in-app notifications?"
    fake.push(ChatReply(tool_calls=[ToolCall("send_response", {"message": question})]))
    first = inbound("whatsapp", "notifications dont work")
    workflow_id = await signal_with_start(client, own, first)
    await _wait_sent(sessions, workflow_id)
    state = await client.get_workflow_handle(workflow_id).query("state", result_type=ConversationState)
    assert state.status == "active"  # asked, not handed off: the customer answers next

    fake.push(ChatReply(tool_calls=[ToolCall("send_response", {"message": "Reconnect Slack under Integrations."})]))
    answer = inbound("whatsapp", "the slack one", key=first.conversation_key, phone=first.sender.phone)
    await signal_with_start(client, own, answer)
    await _wait_sent(sessions, workflow_id, n=2)
    seen = fake.chat_requests[1]["messages"]
    system = seen[0]["content"]
    assert "one short clarifying question" in system and "ideally under 80 words" in system  # WhatsApp's voice
    said = [(m["role"], m["content"]) for m in seen[1:]]
    asked_at = next(i for i, (role, content) in enumerate(said) if role == "assistant" and question in content)
    assert said[asked_at - 1] == ("user", "notifications dont work") and said[-1] == ("user", "the slack one")


async def test_the_model_is_told_the_language_the_customer_writes_in(
    model_worker: tuple[OpenAIFake, Settings], client: Client, sessions: async_sessionmaker[AsyncSession]
) -> None:
    fake, own = model_worker
    fake.push(
        ChatReply(tool_calls=[ToolCall("send_response", {"message": "Abre el menú del tablero y elige Exportar."})])
    )
    text_ = "Hola, ¿cómo exporto un tablero a CSV? No encuentro la opción en el menú"
    workflow_id = await signal_with_start(client, own, inbound("web_form", text_))
    rows = await _wait_sent(sessions, workflow_id)
    assert any("elige Exportar" in c for c in _outbound(rows))
    system = fake.chat_requests[0]["messages"][0]["content"]
    assert "ISO 639-1 code 'es'" in system
    assert system.index("Reason codes and triggers") < system.index("Channel: web_form")  # stable prefix first


@pytest.fixture
async def classified_worker(
    client: Client, settings: Settings, kb_ingested: None
) -> AsyncIterator[tuple[OpenAIFake, Settings]]:
    """A worker with a model configured and the inbound classifier on (the production default)."""
    with OpenAIFake(compat_checks=True) as fake:
        own = settings.model_copy(
            update={
                "temporal_task_queue": f"cls-{uuid.uuid4().hex[:8]}",
                "openai_api_key": SecretStr("sk-test"),
                "openai_base_url": fake.api_base,
                "openai_model": "gpt-4o",
                "inbound_classifier_enabled": True,
                # The offline floor is the keyword rules alone here: the model is what reads past them.
                "guardrails_semantic_enabled": False,
            }
        )
        deps = ActivityDeps.create(own)
        try:
            async with make_worker(client, own, deps, max_cached_workflows=0):
                yield fake, own
        finally:
            await deps.close()


def _classifier_requests(fake: OpenAIFake) -> list[dict[str, Any]]:
    return [r for r in fake.chat_requests if (r.get("response_format") or {}).get("type") == "json_schema"]


async def test_inbound_classifier_adds_an_escalation_the_rules_missed(
    classified_worker: tuple[OpenAIFake, Settings], client: Client, sessions: async_sessionmaker[AsyncSession]
) -> None:
    fake, own = classified_worker
    # Worded so that no rule fires (it is a benign how-to on its face); the model reads it as a refund.
    fake.push_classification("refund", 0.93, "en", prompt_tokens=180, completion_tokens=11)
    message = inbound("web_form", "Could you look at what we paid last month and put it right for us?")
    workflow_id = await signal_with_start(client, own, message)

    async def escalated() -> ConversationState | None:
        state = await client.get_workflow_handle(workflow_id).query("state", result_type=ConversationState)
        return state if state.status == "escalated" and state.escalation is not None else None

    state = await eventually(escalated)
    assert state.escalation is not None and state.escalation.reason == "refund"
    assert len(_classifier_requests(fake)) == 1
    # The agent never ran: the classifier's call is the only model request of the turn.
    assert len(fake.chat_requests) == 1

    async def tokens() -> float | None:
        # The turn's metrics are recorded after the holding message went out.
        async with sessions() as session:
            return await session.scalar(
                text(
                    "SELECT sum(m.value) FROM agent_metrics m JOIN conversations c ON c.id = m.conversation_id "
                    "WHERE c.workflow_id = :w AND m.metric_type = 'llm_tokens'"
                ),
                {"w": workflow_id},
            )

    assert await eventually(tokens) == 191  # the classifier's tokens count against the conversation's budget


async def test_inbound_classifier_lets_a_benign_message_reach_the_agent(
    classified_worker: tuple[OpenAIFake, Settings], client: Client, sessions: async_sessionmaker[AsyncSession]
) -> None:
    fake, own = classified_worker
    # No classification scripted: the fake answers the classifier with a benign default.
    fake.push(ChatReply(tool_calls=[ToolCall("send_response", {"message": "Open the board menu, then Export."})]))
    workflow_id = await signal_with_start(client, own, inbound("whatsapp", "how do i export my board?"))
    rows = await _wait_sent(sessions, workflow_id)
    assert any("board menu, then Export" in str(r["content"]) for r in rows if r["direction"] == "outbound")
    assert len(_classifier_requests(fake)) == 1 and len(fake.chat_requests) == 2


async def test_inbound_classifier_down_fails_closed_to_a_person(
    classified_worker: tuple[OpenAIFake, Settings], client: Client
) -> None:
    fake, own = classified_worker
    fake.push_structured_error(ChatError.bad_request("model rejected the schema"))
    workflow_id = await signal_with_start(client, own, inbound("web_form", "How do I add a due date to a card?"))

    async def escalated() -> ConversationState | None:
        state = await client.get_workflow_handle(workflow_id).query("state", result_type=ConversationState)
        return state if state.status == "escalated" and state.escalation is not None else None

    state = await eventually(escalated)
    assert state.escalation is not None and state.escalation.reason == "model_error"
