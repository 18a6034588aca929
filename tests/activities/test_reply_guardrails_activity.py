"""`check_reply_guardrails` on a real CRM: the reply may name the customer's own contacts, nobody else's.

The activity gets no identity from the workflow beyond `customer_id`; it reads the customer's verified
email addresses and phone numbers from PostgreSQL (customer_identifiers), so these tests
create the customer the way the workflow does (resolve_customer, open_conversation) and store the
model's draft where agent_step stores it.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from temporalio.testing import ActivityEnvironment

from activities.crm_activities import CRMActivities
from activities.deps import ActivityDeps
from activities.guardrails.activities import GuardrailActivities
from crm import identity
from crm.db import transaction
from crm.repositories import customers
from workflows.contracts import (
    InboundMessage,
    OpenConversationInput,
    OutputCheckResult,
    SenderIdentity,
    ToolInput,
)


async def draft(deps: ActivityDeps, *, email: str, phone: str, reply: str) -> ToolInput:
    """A customer known by email and phone, a conversation, and one send_response draft to check."""
    env = ActivityEnvironment()
    crm = CRMActivities(deps)
    message = InboundMessage(
        channel="email",
        external_message_id=f"m-{uuid.uuid4().hex}",
        conversation_key=f"thread-{uuid.uuid4().hex}",
        sender=SenderIdentity(email=email, name="Ana"),
        text="Where is my export?",
        received_at=datetime.now(UTC),
        metadata={"sender_authenticated": "true"},  # Gmail's DKIM/DMARC check passed for the From
    )
    customer = await env.run(crm.resolve_customer, message)
    # The same person confirmed their WhatsApp number too (a link sent to it): a second verified
    # identifier of the same customer. (A number merely typed somewhere would not count: issue 15.)
    async with transaction(deps.sessions) as session:
        await customers.link_identifier(
            session, customer_id=customer.customer_id, kind="phone", value=phone, channel="web_form"
        )
        await identity.confirm_claim(
            session, customer_id=customer.customer_id, kind="phone", value=phone, at=datetime.now(UTC)
        )
    conversation_id = await env.run(
        crm.open_conversation,
        OpenConversationInput(
            workflow_id=f"wf-{uuid.uuid4().hex}",
            run_id=uuid.uuid4().hex,
            channel="email",
            conversation_key=message.conversation_key,
            customer_id=customer.customer_id,
        ),
    )
    call = {"id": "call-1", "name": "send_response", "arguments": json.dumps({"message": reply})}
    async with transaction(deps.sessions) as session:
        step_id = (
            await session.execute(
                text(
                    "INSERT INTO agent_steps (conversation_id, turn, step, role, payload) "
                    "VALUES (:c, 1, 0, 'assistant', CAST(:p AS jsonb)) RETURNING id"
                ),
                {"c": conversation_id, "p": json.dumps({"content": None, "tool_calls": [call]})},
            )
        ).scalar_one()
    return ToolInput(
        conversation_id=conversation_id,
        customer_id=customer.customer_id,
        channel="email",
        ticket_number=None,
        turn=1,
        step=0,
        step_id=str(step_id),
        call_id="call-1",
    )


@pytest.mark.parametrize(
    ("reply", "violations"),
    [
        ("We'll send the export link to {email} and text {phone} when it is ready.", []),
        ("We'll text you at {national} when it is ready.", []),
        ("Your teammate bob.{tag}@othercorp.example asked the same thing.", ["discloses_contact"]),
        ("Call our engineer on +44 20 7946 0958.", ["discloses_contact"]),
        ("Use the key sk-proj-Ab12Cd34Ef56Gh78Ij90KlMnOp for the import.", ["contains_secret"]),
        ("The card 4242 4242 4242 4242 is on file for {email}.", ["contains_card_number"]),
    ],
)
async def test_reply_check_knows_the_customer(deps: ActivityDeps, reply: str, violations: list[str]) -> None:
    tag = uuid.uuid4().hex[:8]
    email = f"ana.{tag}@example.com"
    number = f"{uuid.uuid4().int % 10**7:07d}"
    phone, national = f"+1415{number}", f"(415) {number[:3]}-{number[3:]}"
    inp = await draft(
        deps, email=email, phone=phone, reply=reply.format(email=email, phone=phone, national=national, tag=tag)
    )
    result: OutputCheckResult = await ActivityEnvironment().run(GuardrailActivities(deps).check_reply_guardrails, inp)
    assert result.violations == violations
    assert result.allowed == (not violations)
