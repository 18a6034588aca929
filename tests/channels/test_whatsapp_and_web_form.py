"""WhatsApp and the web form end to end: signed webhooks in, replies out through the Twilio API."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError
from twilio.request_validator import RequestValidator

from core.settings import Settings
from gateway.app import create_app
from tests.channels.conftest import LONG_MARKER, PUBLIC, Pipeline
from tests.workflows.helpers import eventually
from workers.bridge import Bridge
from workflows.contracts import ConversationState, conversation_workflow_id


def _phone() -> str:
    return f"+1555{uuid.uuid4().int % 10**7:07d}"


def signed_whatsapp(p: Pipeline, params: dict[str, str], path: str = "/api/v1/webhooks/whatsapp") -> dict[str, Any]:
    """A request exactly as Twilio sends it, signed with the twilio library itself."""
    token = p.settings.twilio_auth_token.get_secret_value()  # type: ignore[union-attr]
    signature = RequestValidator(token).compute_signature(f"{PUBLIC}{path}", params)
    return {"url": path, "data": params, "headers": {"X-Twilio-Signature": signature}}


def inbound_params(phone: str, body: str, sid: str | None = None) -> dict[str, str]:
    return {
        "MessageSid": sid or f"SM{uuid.uuid4().hex}",
        "AccountSid": "AC" + "0" * 32,
        "From": f"whatsapp:{phone}",
        "To": "whatsapp:+14155550000",
        "Body": body,
        "NumMedia": "0",
        "ProfileName": "Ana",
        "WaId": phone.lstrip("+"),
    }


async def _replies_to(p: Pipeline, phone: str, n: int = 1) -> list[Any]:
    async def arrived() -> list[Any] | None:
        sent = [m for m in p.twilio.messages if m.to == f"whatsapp:{phone}"]
        return sent if len(sent) >= n else None

    return await eventually(arrived, timeout=45)


async def test_signed_whatsapp_message_is_answered_once_even_when_twilio_retries(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession]
) -> None:
    phone = _phone()
    request = signed_whatsapp(pipeline, inbound_params(phone, "How do I add a checklist to a card?"))
    first = await pipeline.http.post(**request)
    assert first.status_code == 200
    assert first.headers["content-type"].startswith("text/xml") and "<Response></Response>" in first.text
    retry = await pipeline.http.post(**request)  # Twilio retries with the same MessageSid
    assert retry.status_code == 200
    replies = await _replies_to(pipeline, phone)
    await asyncio.sleep(2)  # a second reply, if any, would arrive now
    assert len([m for m in pipeline.twilio.messages if m.to == f"whatsapp:{phone}"]) == 1
    assert replies[0].from_ == "whatsapp:+14155550000"
    assert replies[0].status_callback == f"{PUBLIC}/api/v1/webhooks/whatsapp/status"
    async with sessions() as session:
        count = await session.scalar(
            text("SELECT count(*) FROM messages WHERE channel = 'whatsapp' AND external_message_id = :sid"),
            {"sid": request["data"]["MessageSid"]},
        )
    assert count == 1


async def test_a_reply_whatsapp_refuses_goes_to_a_person_and_the_conversation_lives_on(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession]
) -> None:
    # Twilio refuses the answer for good (e.g. outside WhatsApp's 24-hour window): the workflow must
    # not fail; the reply is recorded as failed and a person owns the conversation.
    pipeline.twilio.push_error(400, 63016, "Failed to send freeform message because you are outside the allowed window")
    phone = _phone()
    assert (
        await pipeline.http.post(**signed_whatsapp(pipeline, inbound_params(phone, "how do I archive a board?")))
    ).status_code == 200
    handle = pipeline.client.get_workflow_handle(conversation_workflow_id("whatsapp", phone))

    async def escalated() -> ConversationState | None:
        try:
            state = await handle.query("state", result_type=ConversationState)
        except RPCError:  # the bridge has not started the workflow yet
            return None
        return state if state.status == "escalated" else None

    state = await eventually(escalated, timeout=45)
    assert state.escalation is not None and state.escalation.reason == "delivery_failed"
    assert state.escalation.priority == "high"
    assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
    async with sessions() as session:
        statuses = (
            (
                await session.execute(
                    text(
                        "SELECT m.delivery_status FROM messages m JOIN conversations c ON c.id = m.conversation_id "
                        "WHERE c.workflow_id = :w AND m.direction = 'outbound'"
                    ),
                    {"w": handle.id},
                )
            )
            .scalars()
            .all()
        )
    assert statuses == ["failed"]  # no holding message: the channel just refused one
    assert not [m for m in pipeline.twilio.messages if m.to == f"whatsapp:{phone}"]


async def test_bad_or_missing_signature_is_403_and_nothing_is_published(pipeline: Pipeline) -> None:
    params = inbound_params(_phone(), "hello")
    missing = await pipeline.http.post("/api/v1/webhooks/whatsapp", data=params)
    assert missing.status_code == 403 and "X-Twilio-Signature" in missing.json()["message"]
    forged = await pipeline.http.post("/api/v1/webhooks/whatsapp", data=params, headers={"X-Twilio-Signature": "AAAA"})
    assert forged.status_code == 403
    tampered = signed_whatsapp(pipeline, params)
    tampered["data"] = {**params, "Body": "something else"}
    assert (await pipeline.http.post(**tampered)).status_code == 403


async def test_whatsapp_refuses_everything_when_twilio_is_not_configured(settings: Settings) -> None:
    app = create_app(settings)  # no TWILIO_AUTH_TOKEN
    async with LifespanManager(app) as manager:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url=PUBLIC) as http:
            response = await http.post(
                "/api/v1/webhooks/whatsapp", data=inbound_params(_phone(), "hi"), headers={"X-Twilio-Signature": "x"}
            )
    assert response.status_code == 403
    assert "not configured" in response.json()["message"]


async def test_malformed_whatsapp_inputs_are_4xx(pipeline: Pipeline) -> None:
    no_sid = inbound_params(_phone(), "hi")
    del no_sid["MessageSid"]
    assert (await pipeline.http.post(**signed_whatsapp(pipeline, no_sid))).status_code == 400
    bad_from = {**inbound_params(_phone(), "hi"), "From": "whatsapp:12"}
    assert (await pipeline.http.post(**signed_whatsapp(pipeline, bad_from))).status_code == 400
    media_only = {
        **inbound_params(_phone(), ""),
        "NumMedia": "1",
        "MediaUrl0": "https://api.twilio.com/m/1",
        "MediaContentType0": "image/jpeg",
    }
    assert (await pipeline.http.post(**signed_whatsapp(pipeline, media_only))).status_code == 200


async def test_a_long_reply_arrives_as_ordered_parts_of_at_most_1600_characters(pipeline: Pipeline) -> None:
    phone = _phone()
    await pipeline.http.post(**signed_whatsapp(pipeline, inbound_params(phone, f"{LONG_MARKER} how do I do it all?")))
    replies = await _replies_to(pipeline, phone, n=3)
    await asyncio.sleep(1)
    parts = [m for m in pipeline.twilio.messages if m.to == f"whatsapp:{phone}"]
    assert len(parts) >= 3
    assert all(len(m.body) <= 1600 for m in parts)
    numbers = [int(word.rstrip(":")) for m in parts for word in m.body.split() if word.rstrip(":").isdigit()]
    assert numbers == sorted(numbers)  # the steps arrive in order across the parts
    assert "Step 0:" in replies[0].body and "Step 59:" in parts[-1].body


async def test_status_callbacks_never_move_a_delivery_status_backwards(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession]
) -> None:
    phone = _phone()
    await pipeline.http.post(**signed_whatsapp(pipeline, inbound_params(phone, "how do I rename a board?")))
    reply = (await _replies_to(pipeline, phone))[0]
    path = "/api/v1/webhooks/whatsapp/status"

    async def status() -> str:
        async with sessions() as session:
            return str(
                await session.scalar(
                    text("SELECT delivery_status FROM messages WHERE provider_message_id = :s"), {"s": reply.sid}
                )
            )

    await eventually(lambda: _equals(status, "queued"))
    for value in ("delivered", "sent", "queued"):  # out of order: delivered first, then stale ones
        response = await pipeline.http.post(
            **signed_whatsapp(pipeline, {"MessageSid": reply.sid, "MessageStatus": value}, path)
        )
        assert response.status_code == 204
    assert await status() == "delivered"
    await pipeline.http.post(**signed_whatsapp(pipeline, {"MessageSid": reply.sid, "MessageStatus": "read"}, path))
    assert await status() == "read"
    bad = await pipeline.http.post(
        **signed_whatsapp(pipeline, {"MessageSid": reply.sid, "MessageStatus": "exploded"}, path)
    )
    assert bad.status_code == 400


async def _equals(read: Any, value: str) -> bool:
    return bool(await read() == value)


async def test_web_form_creates_a_ticket_and_the_answer_shows_on_the_ticket(pipeline: Pipeline) -> None:
    email = f"lisa.{uuid.uuid4().hex[:8]}@example.com"
    form = {
        "name": "Lisa Chen",
        "email": email,
        "subject": "Slack notifications",
        "category": "how_to",
        "message": "How do I get a Slack message when a card moves?",
    }
    response = await pipeline.http.post("/api/v1/support/form", json=form)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "received" and body["ticket_id"].startswith("TKT-") and body["created_at"]

    async def answered() -> dict[str, Any] | None:
        ticket = await pipeline.http.get(f"/api/v1/tickets/{body['ticket_id']}", params={"email": email})
        data = ticket.json()
        return (
            data
            if any(m["direction"] == "outbound" and m["delivery_status"] == "delivered" for m in data["messages"])
            else None
        )

    ticket = await eventually(answered, timeout=45)
    assert ticket["channel"] == "web_form" and ticket["category"] == "how_to"
    assert ticket["workflow_id"] == f"conversation-web-{body['ticket_id']}"
    assert [m["direction"] for m in ticket["messages"]] == ["inbound", "outbound"]
    wrong = await pipeline.http.get(f"/api/v1/tickets/{body['ticket_id']}", params={"email": "someone@else.com"})
    assert wrong.status_code == 404


async def test_web_form_tickets_are_numbered_consecutively(pipeline: Pipeline) -> None:
    """One draw from the ticket sequence per submission (the worker's ticket step must not draw another)."""
    numbers = []
    for n in range(3):
        email = f"form.{uuid.uuid4().hex[:8]}@example.com"
        form = {
            "name": "Lisa Chen",
            "email": email,
            "subject": f"Question {n}",
            "category": "how_to",
            "message": "How do I get a Slack message when a card moves?",
        }
        response = await pipeline.http.post("/api/v1/support/form", json=form)
        assert response.status_code == 201, response.text
        ticket_id = response.json()["ticket_id"]

        async def answered(ticket_id: str = ticket_id, email: str = email) -> bool:
            # The answer comes after the workflow's own ticket step, which used to draw a second number.
            ticket = (await pipeline.http.get(f"/api/v1/tickets/{ticket_id}", params={"email": email})).json()
            return any(m["direction"] == "outbound" for m in ticket["messages"])

        await eventually(answered, timeout=45)
        numbers.append(int(ticket_id.removeprefix("TKT-")))
    assert numbers == list(range(numbers[0], numbers[0] + 3)), numbers


async def test_web_form_validation_errors_are_422_with_field_reasons(pipeline: Pipeline) -> None:
    response = await pipeline.http.post(
        "/api/v1/support/form",
        json={
            "name": "",
            "email": "not-an-email",
            "subject": "x",
            "category": "rant",
            "message": "short",
            "phone": "12",
        },
    )
    assert response.status_code == 422
    fields = {e["field"] for e in response.json()["detail"]}
    assert {"name", "email", "subject", "category", "message", "phone"} <= fields
    assert (
        await pipeline.http.post(
            "/api/v1/support/form", content=b"{not json", headers={"content-type": "application/json"}
        )
    ).status_code == 422


async def test_a_number_typed_on_the_form_joins_the_whatsapp_customer_only_once_confirmed(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession]
) -> None:
    phone, email = _phone(), f"omar.{uuid.uuid4().hex[:8]}@example.com"
    form = {
        "name": "Omar",
        "email": email,
        "subject": "Guests",
        "category": "account",
        "message": "How do I invite a guest to one board?",
        "phone": phone,
    }
    created = await pipeline.http.post("/api/v1/support/form", json=form)
    assert created.status_code == 201
    ticket = created.json()["ticket_id"]
    await pipeline.http.post(**signed_whatsapp(pipeline, inbound_params(phone, "and can guests comment?")))
    await _replies_to(pipeline, phone)

    async def owners() -> dict[str, str]:
        async with sessions() as session:
            rows = await session.execute(
                text(
                    "SELECT c.channel, c.customer_id FROM conversations c LEFT JOIN tickets t "
                    "ON t.conversation_id = c.id WHERE t.ticket_number = :t OR (c.channel = 'whatsapp' "
                    "AND c.conversation_key = :p)"
                ),
                {"t": ticket, "p": phone},
            )
            return {r.channel: str(r.customer_id) for r in rows}

    # A typed number is a claim: the form's customer is not the WhatsApp customer (issue 15).
    before = await owners()
    assert set(before) == {"web_form", "whatsapp"} and before["web_form"] != before["whatsapp"]
    # The owner of the number confirms it with the link sent there: one customer.
    asked = await pipeline.http.post(
        f"/api/v1/tickets/{ticket}/confirm-identity", params={"email": email}, json={"identifier": "phone"}
    )
    assert asked.status_code == 202, asked.text

    async def link() -> str | None:
        for message in pipeline.twilio.messages:
            if message.to == f"whatsapp:{phone}" and "/verify/" in message.body:
                return str(message.body.split("/verify/", 1)[1].split()[0])
        return None

    token = await eventually(link, timeout=45)
    assert (await pipeline.http.post(f"/verify/{token}")).status_code == 200
    after = await owners()
    assert after["web_form"] == after["whatsapp"] == before["whatsapp"]


async def test_broker_down_is_503_and_the_retry_after_it_returns_is_answered(pipeline: Pipeline) -> None:
    closed = pipeline.settings.model_copy(update={"kafka_bootstrap_servers": "127.0.0.1:9"})
    phone = _phone()
    request = signed_whatsapp(pipeline, inbound_params(phone, "how do I star a board?"))
    async with LifespanManager(create_app(closed)) as manager:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url=PUBLIC) as http:
            down = await http.post(**request)
    assert down.status_code == 503  # Twilio will retry
    assert (await pipeline.http.post(**request)).status_code == 200  # the retry, broker back
    await _replies_to(pipeline, phone)


async def test_a_replayed_kafka_partition_after_a_bridge_crash_sends_no_second_reply(pipeline: Pipeline) -> None:
    phone = _phone()
    await pipeline.http.post(**signed_whatsapp(pipeline, inbound_params(phone, "how do I pin a comment?")))
    await _replies_to(pipeline, phone)
    # A bridge that died after signalling but before committing leaves the offsets behind: its
    # successor re-reads those records. A fresh consumer group re-reads everything from the start.
    replay = pipeline.settings.model_copy(update={"kafka_consumer_group": f"replay-{uuid.uuid4().hex[:6]}"})
    stop = asyncio.Event()
    task = asyncio.create_task(Bridge(replay).run(stop))
    await asyncio.sleep(5)
    stop.set()
    await asyncio.wait_for(task, 30)
    await asyncio.sleep(1)
    assert len([m for m in pipeline.twilio.messages if m.to == f"whatsapp:{phone}"]) == 1
