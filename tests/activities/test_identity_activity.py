"""`send_identity_confirmation`: one request, one token row, one message, however often it is retried.

Real PostgreSQL; Twilio is the HTTP fake the official client talks to.
"""

from __future__ import annotations

import inspect
import typing
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.testing import ActivityEnvironment
from twilio.base.exceptions import TwilioRestException

from activities.deps import ActivityDeps
from activities.identity import IdentityActivities
from core.settings import Settings
from crm.db import transaction
from crm.identity import resolve_customer
from tests.fakes.twilio_fake import TwilioFake
from workers.registry import activity_callables
from workflows import identity_confirmation as wf
from workflows.identity_confirmation import IdentityConfirmationInput, SendIdentityConfirmationInput


@pytest.fixture
def twilio() -> Iterator[TwilioFake]:
    with TwilioFake() as fake:
        yield fake


@pytest.fixture
async def deps(settings: Settings, twilio: TwilioFake) -> AsyncIterator[ActivityDeps]:
    own = settings.model_copy(
        update={
            "twilio_account_sid": twilio.account_sid,
            "twilio_auth_token": SecretStr(twilio.auth_token),
            "twilio_whatsapp_from": "+14155550000",
            "twilio_api_base_url": twilio.base_url,
        }
    )
    deps = ActivityDeps.create(own)
    yield deps
    await deps.close()


async def request(deps: ActivityDeps) -> SendIdentityConfirmationInput:
    """A web-form customer claiming a phone number, and a request to confirm it."""
    phone = f"+1415{uuid.uuid4().int % 10**7:07d}"
    async with transaction(deps.sessions) as session:
        customer = await resolve_customer(
            session, channel="web_form", email=f"c.{uuid.uuid4().hex[:8]}@example.com", phone=phone, name="C"
        )
    return SendIdentityConfirmationInput(
        request=IdentityConfirmationInput(
            customer_id=customer.customer_id, ticket_number="TKT-0001", identifier_type="phone", identifier_value=phone
        ),
        request_key=f"wf-{uuid.uuid4().hex}/run",
    )


def sent_to(twilio: TwilioFake, phone: str) -> list[str]:
    return [m.body for m in twilio.messages if m.to == f"whatsapp:{phone}"]


async def rows(sessions: async_sessionmaker[AsyncSession], key: str) -> list[dict[str, object]]:
    async with sessions() as session:
        found = await session.execute(text("SELECT * FROM identity_confirmations WHERE request_key = :k"), {"k": key})
        return [dict(r._mapping) for r in found]


async def test_a_retried_request_sends_once(
    deps: ActivityDeps, twilio: TwilioFake, sessions: async_sessionmaker[AsyncSession]
) -> None:
    inp = await request(deps)
    send = IdentityActivities(deps).send_identity_confirmation
    first = await ActivityEnvironment().run(send, inp)
    again = await ActivityEnvironment().run(send, inp)
    assert first.delivery_status == "queued" and first.provider_message_id
    assert again == first
    bodies = sent_to(twilio, inp.request.identifier_value)
    assert len(bodies) == 1 and "/verify/" in bodies[0] and "TKT-0001" in bodies[0]
    [row] = await rows(sessions, inp.request_key)
    token = bodies[0].split("/verify/", 1)[1].split()[0]
    assert token not in str(row.values())


async def test_a_provider_failure_is_retried_with_a_fresh_token_and_a_lost_attempt_is_not_repeated(
    deps: ActivityDeps, twilio: TwilioFake, sessions: async_sessionmaker[AsyncSession]
) -> None:
    inp = await request(deps)
    send = IdentityActivities(deps).send_identity_confirmation
    twilio.push_error(503, 20503, "Service Unavailable")
    with pytest.raises(TwilioRestException):
        await ActivityEnvironment().run(send, inp)
    [failed] = await rows(sessions, inp.request_key)
    assert failed["send_attempted_at"] is None and sent_to(twilio, inp.request.identifier_value) == []
    done = await ActivityEnvironment().run(send, inp)
    [row] = await rows(sessions, inp.request_key)
    assert done.delivery_status == "queued" and row["token_hash"] != failed["token_hash"]

    # An attempt that died inside the provider call leaves its mark: the next attempt does not risk a second link.
    lost = await request(deps)
    async with transaction(sessions) as session:
        await session.execute(
            text(
                "INSERT INTO identity_confirmations (customer_id, identifier_type, identifier_value, token_hash, "
                "request_key, expires_at, send_attempted_at) VALUES (:c, 'phone', :v, :h, :k, now() + interval '1 day', now())"
            ),
            {
                "c": lost.request.customer_id,
                "v": lost.request.identifier_value,
                "h": uuid.uuid4().hex,
                "k": lost.request_key,
            },
        )
    uncertain = await ActivityEnvironment().run(send, lost)
    assert uncertain.delivery_status == "uncertain" and sent_to(twilio, lost.request.identifier_value) == []


def _signature(fn: typing.Callable[..., object]) -> tuple[list[object], object]:
    hints = typing.get_type_hints(fn)
    return [hints.get(n) for n in inspect.signature(fn).parameters if n != "self"], hints.get("return")


def test_the_declaration_the_workflow_calls_matches_the_registered_activity(settings: Settings) -> None:
    registered = {
        activity._Definition.must_from_callable(fn).name: fn for fn in activity_callables(ActivityDeps.create(settings))
    }
    declared = wf.send_identity_confirmation
    name = activity._Definition.must_from_callable(declared).name
    assert name == wf.SEND_IDENTITY_CONFIRMATION_ACTIVITY and name in registered
    assert _signature(declared) == _signature(registered[name])


def test_the_workflow_id_is_one_per_claim_and_names_no_address() -> None:
    one = wf.identity_confirmation_workflow_id(customer_id="c1", identifier_type="email", value="ann@example.com")
    assert one == wf.identity_confirmation_workflow_id(
        customer_id="c1", identifier_type="email", value="ann@example.com"
    )
    assert one != wf.identity_confirmation_workflow_id(
        customer_id="c1", identifier_type="email", value="bob@example.com"
    )
    assert "ann" not in one and "example" not in one
