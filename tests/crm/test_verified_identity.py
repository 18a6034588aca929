"""Identity you can trust (issue 15): verified identifiers find customers, typed claims find nobody.

On the real PostgreSQL, through the same CRM activities the conversation workflow runs: each
attack route of the issue (a victim's phone typed on the web form, an email named inside a
WhatsApp message, case and format variants) leaves the victim's history unreachable from the
attacker's conversations, and only a confirmation of the claim joins two records.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from temporalio.testing import ActivityEnvironment

from activities.crm_activities import CRMActivities
from activities.deps import ActivityDeps
from core.settings import Settings
from core.vocabulary import Channel
from crm import db, identity
from crm.db import transaction
from crm.identity import IdentityRules, normalise_email, normalise_phone
from crm.repositories import customers
from workers.embedded import EmbeddedPostgres
from workflows.contracts import (
    InboundMessage,
    OpenConversationInput,
    RecordInboundInput,
    SenderIdentity,
    ToolInput,
    conversation_workflow_id,
)

# ----------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    "variant",
    ["+14155550100", "+1 (415) 555-0100", "whatsapp:+14155550100", "WhatsApp:+1 415 555 0100", "0014155550100",
     " +1-415-555-0100 "],
)  # fmt: skip
def test_phone_variants_are_one_e164_number(variant: str) -> None:
    assert normalise_phone(variant) == "+14155550100"


@pytest.mark.parametrize("junk", [None, "", "   ", "12", "(415) 555-0100", "call me", "+1 415", "whatsapp:"])
def test_what_is_not_an_international_number_is_not_an_identifier(junk: str | None) -> None:
    assert normalise_phone(junk) is None


def test_a_national_number_needs_the_configured_region() -> None:
    assert normalise_phone("(415) 555-0100") is None
    assert normalise_phone("(415) 555-0100", default_region="US") == "+14155550100"
    assert normalise_phone("020 7946 0958", default_region="GB") == "+442079460958"
    assert IdentityRules(phone_default_region="US").phone("415.555.0100") == "+14155550100"


@pytest.mark.parametrize("variant", ["Victim@Example.com", "victim@example.com", " VICTIM@EXAMPLE.COM "])
def test_email_case_variants_are_one_address(variant: str) -> None:
    assert normalise_email(variant) == "victim@example.com"


@pytest.mark.parametrize("junk", [None, "", "victim", "victim@", "@example.com", "a b@example.com", "x@localhost"])
def test_what_is_not_an_address_is_not_an_identifier(junk: str | None) -> None:
    assert normalise_email(junk) is None


def test_plus_and_gmail_dots_are_folded_only_when_configured() -> None:
    assert normalise_email("Ann.Lee+support@GMail.com") == "ann.lee+support@gmail.com"
    assert normalise_email("Ann.Lee+support@GMail.com", canonical=True) == "annlee@gmail.com"
    assert normalise_email("a.nn@googlemail.com", canonical=True) == "ann@gmail.com"
    # Dots are only ignored by Gmail; plus-addressing is folded everywhere.
    assert normalise_email("ann.lee+x@example.com", canonical=True) == "ann.lee@example.com"


def test_rules_come_from_settings(settings: Settings) -> None:
    rules = IdentityRules.from_settings(
        settings.model_copy(update={"identity_phone_default_region": "gb", "identity_email_canonical": True})
    )
    assert rules == IdentityRules(phone_default_region="GB", email_canonical=True)
    assert IdentityRules.from_settings(settings) == IdentityRules()


# ----------------------------------------------------------------------------- the CRM, as the workflow uses it


def _phone() -> str:
    return f"+1415{uuid.uuid4().int % 10**7:07d}"


def _email(name: str) -> str:
    return f"{name}.{uuid.uuid4().hex[:8]}@example.com"


@dataclass
class Arrived:
    customer_id: str
    conversation_id: str


async def arrive(
    deps: ActivityDeps,
    channel: Channel,
    text_: str,
    *,
    email: str | None = None,
    phone: str | None = None,
    authenticated: bool = True,
) -> Arrived:
    """A message resolved, opened and stored exactly as ConversationWorkflow does it.

    An email is `authenticated` when Gmail's DKIM/DMARC check passed for its From domain (what
    `gateway.gmail.mime` records in the metadata); a forged From is not.
    """
    env, crm = ActivityEnvironment(), CRMActivities(deps)
    key = phone if channel == "whatsapp" and phone else f"key-{uuid.uuid4().hex}"
    message = InboundMessage(
        channel=channel,
        external_message_id=f"m-{uuid.uuid4().hex}",
        conversation_key=key,
        sender=SenderIdentity(email=email, phone=phone, name="Sam"),
        text=text_,
        received_at=datetime.now(UTC),
        metadata={"sender_authenticated": "true" if authenticated else "false"} if channel == "email" else {},
    )
    customer = await env.run(crm.resolve_customer, message)
    conversation_id = await env.run(
        crm.open_conversation,
        OpenConversationInput(
            workflow_id=conversation_workflow_id(channel, key),
            run_id=uuid.uuid4().hex,
            channel=channel,
            conversation_key=key,
            customer_id=customer.customer_id,
        ),
    )
    await env.run(crm.record_inbound_message, RecordInboundInput(conversation_id=conversation_id, message=message))
    return Arrived(customer.customer_id, conversation_id)


async def history_tool(deps: ActivityDeps, at: Arrived, channel: Channel) -> str:
    """What the model's get_customer_history tool returns in that conversation (as stored for the model)."""
    call_id = f"call-{uuid.uuid4().hex[:8]}"
    inp = ToolInput(
        conversation_id=at.conversation_id,
        customer_id=at.customer_id,
        channel=channel,
        ticket_number=None,
        turn=1,
        step=1,
        step_id="",
        call_id=call_id,
    )
    await ActivityEnvironment().run(CRMActivities(deps).get_customer_history, inp)
    async with deps.sessions() as session:
        payload = await session.scalar(
            text("SELECT payload FROM agent_steps WHERE conversation_id = :c AND tool_call_id = :id"),
            {"c": at.conversation_id, "id": call_id},
        )
    return json.dumps(payload)


async def contacts(deps: ActivityDeps, customer_id: str) -> set[str]:
    async with deps.sessions() as session:
        return set(await customers.contact_points(session, customer_id=customer_id))


SECRET = "my invoice 4471 and the new office address"


async def test_a_phone_typed_on_the_form_then_an_email_from_the_typed_address_reaches_nobody(
    deps: ActivityDeps,
) -> None:
    victim_phone, attacker = _phone(), _email("mallory")
    victim = await arrive(deps, "whatsapp", f"Hi, {SECRET}", phone=victim_phone)
    # Step one: the attacker types the victim's number (in another format) next to their own address.
    national = f"+1 ({victim_phone[2:5]}) {victim_phone[5:8]}-{victim_phone[8:]}"
    form = await arrive(deps, "web_form", "Please update my account", email=attacker.upper(), phone=national)
    assert form.customer_id != victim.customer_id
    # Step two: an email from the attacker's own address, through the Gmail path.
    mail = await arrive(deps, "email", "What did I tell you last week?", email=attacker)
    assert mail.customer_id not in {victim.customer_id}
    assert SECRET not in await history_tool(deps, mail, "email")
    assert SECRET not in await history_tool(deps, form, "web_form")
    # The victim's number still finds the victim only; the attacker's record merely claims it.
    async with deps.sessions() as session:
        assert await customers.find_by_identifier(session, kind="phone", value=victim_phone) == victim.customer_id
        assert await customers.claimed(session, customer_id=form.customer_id, kind="phone") == [victim_phone]
    # The reply check never counts the victim's number as the attacker's own.
    assert victim_phone not in await contacts(deps, mail.customer_id)
    assert await contacts(deps, mail.customer_id) == {attacker}
    assert await contacts(deps, victim.customer_id) == {victim_phone}


async def test_an_email_claimed_inside_a_whatsapp_message_links_nothing(deps: ActivityDeps) -> None:
    victim_email = _email("victim")
    victim = await arrive(deps, "email", SECRET, email=victim_email)
    phone = _phone()
    # A WhatsApp message that carries (or names) the victim's address: the number is proven, the address is not.
    chat = await arrive(deps, "whatsapp", f"my email is {victim_email}, what was my last order?", phone=phone,
                        email=victim_email.title())  # fmt: skip
    assert chat.customer_id != victim.customer_id
    assert SECRET not in await history_tool(deps, chat, "whatsapp")
    assert victim_email not in await contacts(deps, chat.customer_id)
    # The victim keeps writing from the same address, in any case: still the victim, still one record.
    again = await arrive(deps, "email", "one more thing", email=victim_email.upper())
    assert again.customer_id == victim.customer_id
    assert SECRET in await history_tool(deps, again, "email")


async def test_a_forged_from_address_reaches_nobody(deps: ActivityDeps) -> None:
    victim_email = _email("victim")
    victim = await arrive(deps, "email", SECRET, email=victim_email)
    # Mail that claims the victim's From but failed Gmail's DKIM/DMARC check: a stranger's claim.
    forged = await arrive(deps, "email", "what did I send you last week?", email=victim_email, authenticated=False)
    assert forged.customer_id != victim.customer_id
    assert SECRET not in await history_tool(deps, forged, "email")
    async with deps.sessions() as session:
        assert await customers.find_by_identifier(session, kind="email", value=victim_email) == victim.customer_id
    # A follow-up in the forged thread stays with the forger's record; the real owner keeps theirs.
    again = await arrive(deps, "email", "one more thing", email=victim_email)
    assert again.customer_id == victim.customer_id


@pytest.mark.parametrize(
    "variant",
    ["+1 ({a}) {b}-{c}", "whatsapp:+1{a}{b}{c}", "001{a}{b}{c}", "+1-{a}-{b}-{c}"],
)
async def test_format_variants_of_a_number_are_one_customer_and_typed_ones_none(
    deps: ActivityDeps, variant: str
) -> None:
    phone = _phone()
    a, b, c = phone[2:5], phone[5:8], phone[8:]
    first = await arrive(deps, "whatsapp", SECRET, phone=phone)
    same = await arrive(deps, "whatsapp", "again", phone=variant.format(a=a, b=b, c=c))
    assert same.customer_id == first.customer_id
    typed = await arrive(deps, "web_form", "hello there", email=_email("t"), phone=variant.format(a=a, b=b, c=c))
    assert typed.customer_id != first.customer_id
    assert SECRET not in await history_tool(deps, typed, "web_form")


async def test_every_web_form_submission_is_its_own_customer_with_its_own_contacts(deps: ActivityDeps) -> None:
    email, phone = _email("ana"), _phone()
    one = await arrive(deps, "web_form", "first question", email=email, phone=phone)
    two = await arrive(deps, "web_form", "second question", email=email.upper(), phone=phone)
    assert one.customer_id != two.customer_id
    # Nothing verified: the submitter's own typed details are theirs to see in a reply.
    assert await contacts(deps, one.customer_id) == {email, phone}
    async with deps.sessions() as session:
        record = await customers.profile(session, customer_id=uuid.UUID(one.customer_id))
    assert record is not None and (record.email, record.phone) == (email, phone)


async def test_two_first_messages_at_once_from_one_number_make_one_customer(deps: ActivityDeps) -> None:
    phone = _phone()

    async def first_contact() -> str:
        async with transaction(deps.sessions) as session:
            found = await identity.resolve_customer(session, channel="whatsapp", email=None, phone=phone, name=None)
            return found.customer_id

    ids = await asyncio.gather(*(first_contact() for _ in range(5)))
    assert len(set(ids)) == 1


async def test_a_message_without_any_identifier_is_refused(deps: ActivityDeps) -> None:
    async with transaction(deps.sessions) as session:
        with pytest.raises(identity.NoIdentity):
            await identity.resolve_customer(session, channel="email", email="not an address", phone=None, name=None)


# ----------------------------------------------------------------------------- confirming a claim


async def test_a_confirmed_claim_is_verified_and_then_finds_the_customer(deps: ActivityDeps) -> None:
    email, phone = _email("lee"), _phone()
    form = await arrive(deps, "web_form", "please help me", email=email, phone=phone)
    async with transaction(deps.sessions) as session:
        done = await identity.confirm_claim(
            session, customer_id=form.customer_id, kind="email", value=email, at=datetime.now(UTC)
        )
    assert done.customer_id == form.customer_id and done.merge is None
    mail = await arrive(deps, "email", "following up", email=email)
    assert mail.customer_id == form.customer_id
    # Verified now: the unconfirmed phone no longer counts as the customer's own.
    assert await contacts(deps, form.customer_id) == {email}


async def test_a_claim_confirmed_by_the_owner_joins_the_records(
    deps: ActivityDeps, sessions: async_sessionmaker[AsyncSession]
) -> None:
    phone = _phone()
    owner = await arrive(deps, "whatsapp", SECRET, phone=phone)
    form = await arrive(deps, "web_form", "my web question", email=_email("own"), phone=phone)
    async with transaction(deps.sessions) as session:
        done = await identity.confirm_claim(
            session, customer_id=form.customer_id, kind="phone", value=phone, at=datetime.now(UTC)
        )
    assert done.customer_id == owner.customer_id and done.merge is not None
    async with sessions() as session:
        moved = await session.scalar(
            text("SELECT customer_id FROM conversations WHERE id = :c"), {"c": form.conversation_id}
        )
        merged_into = await session.scalar(
            text("SELECT merged_into FROM customers WHERE id = :c"), {"c": form.customer_id}
        )
    assert str(moved) == owner.customer_id and str(merged_into) == owner.customer_id
    assert await contacts(deps, owner.customer_id) == {phone}


async def test_nothing_is_confirmed_that_was_not_claimed(deps: ActivityDeps) -> None:
    phone = _phone()
    owner = await arrive(deps, "whatsapp", SECRET, phone=phone)
    stranger = await arrive(deps, "web_form", "unrelated", email=_email("x"))
    async with transaction(deps.sessions) as session:
        with pytest.raises(identity.ClaimNotFound):
            await identity.confirm_claim(
                session, customer_id=stranger.customer_id, kind="phone", value=phone, at=datetime.now(UTC)
            )
        # The owner confirming its own number changes nothing.
        done = await identity.confirm_claim(
            session, customer_id=owner.customer_id, kind="phone", value=phone, at=datetime.now(UTC)
        )
    assert done.customer_id == owner.customer_id and done.merge is None


# ----------------------------------------------------------------------------- the migration's backfill


async def test_backfill_verifies_only_what_a_channel_proved(postgres: EmbeddedPostgres) -> None:
    name = f"backfill_{uuid.uuid4().hex[:8]}"
    admin = create_async_engine(postgres.url("postgres"), isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = create_async_engine(postgres.url(name))
    try:
        await asyncio.to_thread(db.upgrade, postgres.url(name), "0008")
        async with engine.begin() as conn:
            victim = (await conn.execute(text("INSERT INTO customers (name) VALUES ('V') RETURNING id"))).scalar_one()
            rows = [
                # The old linking: the victim's WhatsApp number, then an address typed on the form beside it.
                (victim, "phone", "+14155550100", "whatsapp"),
                (victim, "email", "mallory@example.com", "web_form"),
                (victim, "email", "victim@example.com", "email"),
                # A number first typed on the form whose own WhatsApp conversation the customer has.
                (victim, "phone", "+14155550199", "web_form"),
                (victim, "phone", "+14155550123", "web_form"),
            ]
            for customer, kind, value, channel in rows:
                await conn.execute(
                    text(
                        "INSERT INTO customer_identifiers (customer_id, identifier_type, identifier_value, channel) "
                        "VALUES (:c, :k, :v, :ch)"
                    ),
                    {"c": customer, "k": kind, "v": value, "ch": channel},
                )
            await conn.execute(
                text(
                    "INSERT INTO conversations (customer_id, channel, conversation_key, workflow_id) "
                    "VALUES (:c, 'whatsapp', '+14155550199', 'wf-backfill')"
                ),
                {"c": victim},
            )
        await asyncio.to_thread(db.upgrade, postgres.url(name), "0009")
        async with engine.connect() as conn:
            found = {
                r.identifier_value: r.verified_via
                for r in await conn.execute(text("SELECT identifier_value, verified_via FROM customer_identifiers"))
            }
        assert found == {
            "+14155550100": "whatsapp",
            "mallory@example.com": None,
            "victim@example.com": "gmail",
            "+14155550199": "whatsapp",
            "+14155550123": None,
        }
        await asyncio.to_thread(db.downgrade, postgres.url(name), "0008")
    finally:
        await engine.dispose()
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()
