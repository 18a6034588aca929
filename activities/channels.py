"""Reply activities: format for the channel, record under an idempotency key, then send.

A reply is first recorded (status `pending`) under a key the workflow derives deterministically;
the send activity takes that message id and sends only if the row has not been sent yet, so a
retried activity never sends twice. Channels without credentials record `not_configured` and
log it, never drop the reply silently.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy import text
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.deps import ActivityDeps
from activities.formatting import ChannelStyle, escalation_message, format_reply
from activities.gmail import GmailAdapter
from core.logging import get_logger
from core.settings import Settings
from crm.db import transaction
from workflows.contracts import PreparedReply, PrepareReplyInput, SendResult

log = get_logger(__name__)


@dataclass(frozen=True)
class OutboundMessage:
    message_id: str
    channel: str
    content: str
    to_email: str | None
    to_phone: str | None
    attributes: dict[str, object]


class ChannelAdapter(Protocol):
    """One small port per channel: deliver a recorded outbound message, return (status, provider id)."""

    async def send(self, message: OutboundMessage) -> tuple[str, str | None]: ...


class WebFormAdapter:
    """Web replies are shown on the ticket page: storing them is the delivery."""

    async def send(self, message: OutboundMessage) -> tuple[str, str | None]:
        return "delivered", None


class WhatsAppAdapter:
    """Twilio's REST API (the official client); base URL overridable for tests and proxies."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client = None

    def _twilio(self):  # type: ignore[no-untyped-def]
        if self._client is None:
            from twilio.rest import Client

            s = self.settings
            assert s.twilio_auth_token is not None
            client = Client(s.twilio_account_sid, s.twilio_auth_token.get_secret_value())
            if s.twilio_api_base_url:
                client.api.base_url = s.twilio_api_base_url.rstrip("/")
            self._client = client
        return self._client

    async def send(self, message: OutboundMessage) -> tuple[str, str | None]:
        s = self.settings
        if not s.twilio_configured or not s.twilio_whatsapp_from or not message.to_phone:
            return "not_configured", None
        from twilio.base.exceptions import TwilioRestException

        kwargs: dict[str, object] = {
            "from_": _whatsapp(s.twilio_whatsapp_from),
            "to": _whatsapp(message.to_phone),
            "body": message.content,
        }
        if s.public_base_url:
            kwargs["status_callback"] = f"{str(s.public_base_url).rstrip('/')}/api/v1/webhooks/whatsapp/status"
        try:
            sent = await asyncio.to_thread(lambda: self._twilio().messages.create(**kwargs))
        except TwilioRestException as exc:
            if exc.status in (429,) or exc.status >= 500:
                raise  # transient: Temporal retries
            raise ApplicationError(
                f"Twilio rejected the message: {exc.code} {exc.msg}", type="SendRejected", non_retryable=True
            ) from exc
        return str(sent.status or "queued"), str(sent.sid)

    async def find_sent(self, message: OutboundMessage, *, since: datetime, known: set[str]) -> tuple[str, str] | None:
        """The message an earlier, interrupted attempt already handed to Twilio, if any.

        Twilio's Messages API has no idempotency key, so we look for our own message: same
        recipient and body, created after the attempt was recorded (minus clock skew), and not
        already recorded against another of our rows (`known`).
        """
        s = self.settings
        if not s.twilio_configured or not s.twilio_whatsapp_from or not message.to_phone:
            return None
        to, from_ = _whatsapp(message.to_phone), _whatsapp(s.twilio_whatsapp_from)
        recent = await asyncio.to_thread(lambda: self._twilio().messages.list(to=to, from_=from_, limit=50))
        for sent in recent:
            created = sent.date_created
            if sent.sid in known or sent.body != message.content:
                continue
            if created is None or created >= since - timedelta(minutes=5):
                return str(sent.status or "queued"), str(sent.sid)
        return None


def _whatsapp(number: str) -> str:
    return number if number.startswith("whatsapp:") else f"whatsapp:{number}"


class ChannelActivities:
    def __init__(self, deps: ActivityDeps) -> None:
        self.deps = deps
        self.adapters: dict[str, ChannelAdapter] = {
            "web_form": WebFormAdapter(),
            "whatsapp": WhatsAppAdapter(deps.settings),
            "email": GmailAdapter(deps.settings, deps.sessions),
        }

    @activity.defn(name="prepare_reply")
    async def prepare_reply(self, inp: PrepareReplyInput) -> PreparedReply:
        """Format the reply for the channel and record it (pending) under its idempotency key."""
        async with transaction(self.deps.sessions) as session:
            existing = (
                await session.execute(
                    text(
                        "SELECT id FROM messages WHERE split_part(idempotency_key, '#', 1) = :k "
                        "ORDER BY (attributes->>'part')::int NULLS FIRST"
                    ),
                    {"k": inp.idempotency_key},
                )
            ).all()
            if existing:
                return PreparedReply(message_ids=[str(r.id) for r in existing])
            body = await self._body(inp)
            style_row = (
                await session.execute(
                    text(
                        "SELECT channel, tone, max_response_length, greeting, signature FROM channel_configs "
                        "WHERE channel = :ch"
                    ),
                    {"ch": inp.channel},
                )
            ).one()
            customer_name = await session.scalar(
                # The name this conversation's sender gave (a web form may name an existing customer
                # by email without proving it), else the CRM's.
                text(
                    "SELECT coalesce((SELECT m.attributes->>'sender_name' FROM messages m "
                    "WHERE m.conversation_id = c.id AND m.direction = 'inbound' ORDER BY m.created_at DESC LIMIT 1), "
                    "cu.name) "
                    "FROM conversations c JOIN customers cu ON cu.id = c.customer_id WHERE c.id = :c"
                ),
                {"c": inp.conversation_id},
            )
            parts = format_reply(
                body,
                style=ChannelStyle(*style_row),
                customer_name=customer_name,
                ticket_number=inp.ticket_number,
                human_agent=inp.human_agent,
            )
            role = "human_agent" if inp.source == "human" else "agent"
            ids = []
            for index, part in enumerate(parts):
                key = inp.idempotency_key if len(parts) == 1 else f"{inp.idempotency_key}#{index + 1}"
                row = await session.execute(
                    text(
                        "INSERT INTO messages (conversation_id, channel, direction, role, content, idempotency_key, "
                        "delivery_status, attributes) VALUES (:c, :ch, 'outbound', :role, :content, :key, 'pending', "
                        "CAST(:attr AS jsonb)) RETURNING id"
                    ),
                    {
                        "c": inp.conversation_id,
                        "ch": inp.channel,
                        "role": role,
                        "content": part,
                        "key": key,
                        "attr": json.dumps(
                            {
                                "part": index + 1,
                                "parts": len(parts),
                                "source": inp.source,
                                "human_agent": inp.human_agent,
                            }
                        ),
                    },
                )
                ids.append(str(row.scalar_one()))
        return PreparedReply(message_ids=ids)

    async def _body(self, inp: PrepareReplyInput) -> str:
        if inp.source == "human":
            return inp.human_reply or ""
        if inp.source == "template":
            kind, _, reason = (inp.template or "").partition(":")
            if kind != "escalation":
                raise ApplicationError(f"unknown reply template {inp.template!r}", non_retryable=True)
            return escalation_message(
                reason, sla_hint=f"within {self.deps.settings.escalation_sla_business_hours:g} business hours"
            )
        from workflows.contracts import ToolInput

        args = await self.deps.tool_arguments(
            ToolInput(
                conversation_id=inp.conversation_id,
                customer_id="",
                channel=inp.channel,
                ticket_number=inp.ticket_number,
                turn=0,
                step=0,
                step_id=inp.step_id or "",
                call_id=inp.call_id or "",
            )
        )
        message = str(args.get("message", "")).strip()
        if not message:
            raise ApplicationError("the model's send_response had no message", non_retryable=True)
        return message

    async def _send(self, message_id: str) -> SendResult:
        async with self.deps.sessions() as session:
            row = (
                await session.execute(
                    text(
                        "SELECT m.id, m.channel, m.content, m.delivery_status, m.provider_message_id, m.attributes, "
                        "cu.email, cu.phone, c.conversation_key FROM messages m "
                        "JOIN conversations c ON c.id = m.conversation_id JOIN customers cu ON cu.id = c.customer_id "
                        "WHERE m.id = :id AND m.direction = 'outbound'"
                    ),
                    {"id": message_id},
                )
            ).one_or_none()
        if row is None:
            raise ApplicationError(f"outbound message {message_id} does not exist", non_retryable=True)
        if row.delivery_status != "pending":
            # Already sent (or recorded as not configured) by an earlier attempt: never send twice.
            return SendResult(
                message_id=message_id, delivery_status=row.delivery_status, provider_message_id=row.provider_message_id
            )
        phone = row.conversation_key if row.channel == "whatsapp" else row.phone
        outbound = OutboundMessage(str(row.id), row.channel, row.content, row.email, phone, dict(row.attributes))
        adapter = self.adapters[row.channel]
        found = None
        attempted_at = row.attributes.get("send_attempted_at")
        finder = getattr(adapter, "find_sent", None)
        if attempted_at and finder is not None:
            # An earlier attempt may have reached the provider and died (or lost PostgreSQL)
            # before recording it: look before sending again.
            async with self.deps.sessions() as session:
                known = set(
                    (
                        await session.scalars(
                            text(
                                "SELECT provider_message_id FROM messages WHERE provider_message_id IS NOT NULL "
                                "AND conversation_id = (SELECT conversation_id FROM messages WHERE id = :id)"
                            ),
                            {"id": message_id},
                        )
                    ).all()
                )
            found = await finder(outbound, since=datetime.fromisoformat(attempted_at), known=known)
        if found is None:
            async with transaction(self.deps.sessions) as session:
                await session.execute(
                    text(
                        "UPDATE messages SET attributes = attributes || jsonb_build_object('send_attempted_at', "
                        "CAST(:at AS text)) WHERE id = :id AND delivery_status = 'pending'"
                    ),
                    {"id": message_id, "at": datetime.now(UTC).isoformat()},
                )
            status, provider_id = await adapter.send(outbound)
        else:
            status, provider_id = found
            log.warning("channel.resend_avoided", channel=row.channel, message_id=message_id, provider_id=found[1])
        async with transaction(self.deps.sessions) as session:
            await session.execute(
                text(
                    "UPDATE messages SET delivery_status = :s, provider_message_id = :p WHERE id = :id "
                    "AND delivery_status = 'pending'"
                ),
                {"s": status, "p": provider_id, "id": message_id},
            )
        if status == "not_configured":
            log.warning("channel.not_configured", channel=row.channel, message_id=message_id)
        else:
            log.info("channel.reply_sent", channel=row.channel, message_id=message_id, status=status)
        return SendResult(message_id=message_id, delivery_status=status, provider_message_id=provider_id)

    @activity.defn(name="send_web_form_reply")
    async def send_web_form_reply(self, message_id: str) -> SendResult:
        """Publish the reply on the customer's ticket page."""
        return await self._send(message_id)

    @activity.defn(name="send_whatsapp_reply")
    async def send_whatsapp_reply(self, message_id: str) -> SendResult:
        """Send the reply through Twilio's WhatsApp API (once per outbound message)."""
        return await self._send(message_id)

    @activity.defn(name="send_email_reply")
    async def send_email_reply(self, message_id: str) -> SendResult:
        """Send the reply by email in the customer's thread (once per outbound message)."""
        return await self._send(message_id)
