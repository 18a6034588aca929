"""The inbound guardrail activities on a real CRM (issue 14): the detected language is stored on the
message and its conversation, and `classify_inbound` asks the model (the OpenAI fake) for a
structured verdict that may add an escalation, never remove one.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr
from sqlalchemy import text
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.crm_activities import CRMActivities
from activities.deps import ActivityDeps
from activities.guardrails.activities import GuardrailActivities
from core.settings import Settings
from tests.fakes.openai_fake import ChatError, OpenAIFake
from workflows.contracts import (
    GuardrailInput,
    InboundClassification,
    InboundMessage,
    OpenConversationInput,
    RecordInboundInput,
    SenderIdentity,
)


async def inbound(deps: ActivityDeps, body: str) -> tuple[str, str]:
    """A customer, a conversation and one stored inbound message: (conversation id, message id)."""
    env = ActivityEnvironment()
    crm = CRMActivities(deps)
    message = InboundMessage(
        channel="web_form",
        external_message_id=f"m-{uuid.uuid4().hex}",
        conversation_key=f"form-{uuid.uuid4().hex}",
        sender=SenderIdentity(email=f"c.{uuid.uuid4().hex[:8]}@example.com", name="Carla"),
        text=body,
        received_at=datetime.now(UTC),
    )
    customer = await env.run(crm.resolve_customer, message)
    conversation_id = await env.run(
        crm.open_conversation,
        OpenConversationInput(
            workflow_id=f"wf-{uuid.uuid4().hex}",
            run_id=uuid.uuid4().hex,
            channel="web_form",
            conversation_key=message.conversation_key,
            customer_id=customer.customer_id,
        ),
    )
    recorded = await env.run(
        crm.record_inbound_message, RecordInboundInput(conversation_id=conversation_id, message=message)
    )
    return conversation_id, recorded.message_id


async def stored_languages(deps: ActivityDeps, conversation_id: str, message_id: str) -> tuple[str | None, str | None]:
    async with deps.sessions() as session:
        row = (
            await session.execute(
                text(
                    "SELECT m.language AS message, c.language AS conversation FROM messages m "
                    "JOIN conversations c ON c.id = m.conversation_id WHERE m.id = :m AND c.id = :c"
                ),
                {"m": message_id, "c": conversation_id},
            )
        ).one()
    return row.message, row.conversation


@pytest.mark.parametrize(
    ("body", "language", "reason"),
    [
        ("Hola, ¿cómo puedo exportar un tablero a CSV? Muchas gracias.", "es", None),
        ("Buongiorno, come posso esportare una bacheca in formato CSV? Grazie mille.", "it", "language"),
    ],
)
async def test_the_language_is_stored_on_the_message_and_the_conversation(
    deps: ActivityDeps, body: str, language: str, reason: str | None
) -> None:
    conversation_id, message_id = await inbound(deps, body)
    result = await ActivityEnvironment().run(
        GuardrailActivities(deps).check_inbound_guardrails, GuardrailInput(message_ids=[message_id], channel="web_form")
    )
    assert (result.language, result.reason) == (language, reason)
    assert await stored_languages(deps, conversation_id, message_id) == (language, language)


async def test_an_undetectable_message_stores_no_language(deps: ActivityDeps) -> None:
    conversation_id, message_id = await inbound(deps, "👍")
    result = await ActivityEnvironment().run(
        GuardrailActivities(deps).check_inbound_guardrails, GuardrailInput(message_ids=[message_id], channel="web_form")
    )
    assert (result.action, result.language) == ("answer", None)
    assert await stored_languages(deps, conversation_id, message_id) == (None, None)


@pytest.fixture
async def model_deps(settings: Settings) -> AsyncIterator[tuple[ActivityDeps, OpenAIFake]]:
    with OpenAIFake() as fake:
        own = settings.model_copy(
            update={"openai_api_key": SecretStr("sk-test"), "openai_base_url": fake.api_base, "openai_model": "gpt-4o"}
        )
        deps = ActivityDeps.create(own)
        try:
            yield deps, fake
        finally:
            await deps.close()


async def classify(deps: ActivityDeps, body: str) -> InboundClassification:
    _, message_id = await inbound(deps, body)
    return await ActivityEnvironment().run(
        GuardrailActivities(deps).classify_inbound, GuardrailInput(message_ids=[message_id], channel="web_form")
    )


async def test_the_classifier_adds_an_escalation_with_its_reason_and_tokens(
    model_deps: tuple[ActivityDeps, OpenAIFake],
) -> None:
    deps, fake = model_deps
    fake.push_classification("refund", 0.91, "en", prompt_tokens=210, completion_tokens=14)
    body = "the annual fee went out again although we stopped in March, can you sort that out"
    result = await classify(deps, body)
    assert result.model_dump() == {
        "escalate": True,
        "reason": "refund",
        "confidence": 0.91,
        "language": "en",
        "prompt_tokens": 210,
        "completion_tokens": 14,
    }
    request = fake.last_chat_request
    assert request["response_format"]["type"] == "json_schema"
    assert request["response_format"]["json_schema"]["strict"] is True
    # The customer's words reach the model as data inside the user message, never as the system prompt.
    assert body in request["messages"][1]["content"] and body not in request["messages"][0]["content"]


@pytest.mark.parametrize(
    ("reason", "confidence", "language", "escalate", "stored_language"),
    [
        ("none", 0.97, "de", False, "de"),
        ("pricing", 0.40, "en", False, "en"),  # below INBOUND_CLASSIFIER_MIN_CONFIDENCE (0.6)
        ("language", 0.80, "ITALIAN", True, None),  # not an ISO 639-1 code: no language reported
    ],
)
async def test_the_classifier_only_escalates_a_confident_reason(
    model_deps: tuple[ActivityDeps, OpenAIFake],
    reason: str,
    confidence: float,
    language: str,
    escalate: bool,
    stored_language: str | None,
) -> None:
    deps, fake = model_deps
    fake.push_classification(reason, confidence, language)
    result = await classify(deps, "how do I add a checklist to a card?")
    assert (result.escalate, result.language) == (escalate, stored_language)
    assert result.reason == (reason if escalate else None)


@pytest.mark.parametrize(
    "content",
    [
        "sure, looks like a refund to me",
        json.dumps({"reason": "complaint", "confidence": 0.9, "language": "en"}),
        json.dumps({"reason": "refund", "confidence": 7, "language": "en"}),
    ],
)
async def test_an_answer_outside_the_schema_fails_the_activity(
    model_deps: tuple[ActivityDeps, OpenAIFake], content: str
) -> None:
    deps, fake = model_deps
    fake.push_structured_reply(content)
    with pytest.raises(ValueError, match="classification schema"):
        await classify(deps, "where are my invoices?")


async def test_a_rejected_request_is_not_retried(model_deps: tuple[ActivityDeps, OpenAIFake]) -> None:
    deps, fake = model_deps
    fake.push_structured_error(ChatError.bad_request("Invalid schema for response_format"))
    with pytest.raises(ApplicationError) as failure:
        await classify(deps, "where are my invoices?")
    assert failure.value.non_retryable and "HTTP 400" in str(failure.value)


async def test_without_a_model_the_activity_refuses_rather_than_passing_the_message(deps: ActivityDeps) -> None:
    assert not deps.settings.openai_configured
    with pytest.raises(RuntimeError, match="OPENAI_API_KEY"):
        await classify(deps, "where are my invoices?")
