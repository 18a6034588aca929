"""Reply activities: format for the channel, record under an idempotency key, then send; and the Gmail watch.

A reply is first recorded (status `pending`) under a key the workflow derives deterministically;
the send activity takes that message id and sends only if the row has not been sent yet, so a
retried activity never sends twice. Channels without credentials record `not_configured` and
log it, never drop the reply silently.

These activities own the database work (through `crm.repositories`); the adapters they call get a
complete `OutboundMessage` and only talk to their provider.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.channels.formatting import (
    business_hours_text,
    email_html,
    format_reply,
    holding_message,
    rating_request,
    sla_hint,
)
from activities.channels.gmail import GmailAdapter, email_thread, reply_recipient, watch_inbox
from activities.channels.late_reply import WhatsAppPlan, plan_whatsapp_send
from activities.channels.port import ChannelAdapter, Delivery, OutboundMessage
from activities.channels.web import WebFormAdapter, send_reply_notice
from activities.channels.whatsapp import WhatsAppAdapter
from activities.deps import ActivityDeps
from core.logging import get_logger
from core.ticket_links import rating_link, ticket_link, ticket_token
from core.vocabulary import Channel
from crm.db import transaction
from crm.repositories import channel_configs, conversations, escalations, gmail_sync, messages, tickets
from crm.repositories.messages import OutboundRecord
from kb import learning
from workflows.contracts import (
    ErrorType,
    PreparedReply,
    PrepareReplyInput,
    SendReplyInput,
    SendResult,
    ToolInput,
)
from workflows.gmail_watch import RENEW_GMAIL_WATCH_ACTIVITY, GmailWatchInput, GmailWatchResult

log = get_logger(__name__)


def outbound_message(record: OutboundRecord, *, parent: Mapping[str, object] | None = None) -> OutboundMessage:
    """The complete message an adapter needs for a recorded outbound row.

    `parent` is the attributes of the customer's latest email in the conversation (email only):
    the reply joins its thread and goes to its Reply-To or sender.
    """
    if record.channel == "email":
        facts = parent or {}
        return OutboundMessage(
            message_id=record.message_id,
            channel=record.channel,
            content=record.content,
            to_email=reply_recipient(facts, record.customer_email),
            to_phone=record.customer_phone,
            attributes=record.attributes,
            email_thread=email_thread(facts, conversation_key=record.conversation_key),
        )
    # A WhatsApp conversation is keyed by the customer's number: the reply goes where the message came from.
    phone = record.conversation_key if record.channel == "whatsapp" else record.customer_phone
    return OutboundMessage(
        message_id=record.message_id,
        channel=record.channel,
        content=record.content,
        to_email=record.customer_email,
        to_phone=phone,
        attributes=record.attributes,
    )


async def load_outbound(session: AsyncSession, *, message_id: str) -> tuple[OutboundRecord, OutboundMessage] | None:
    """The recorded outbound row and its adapter's complete message; None if there is no such row."""
    record = await messages.get_outbound(session, message_id=message_id)
    if record is None:
        return None
    parent = None
    if record.channel == "email":
        parent = await messages.latest_inbound_attributes(
            session, conversation_id=record.conversation_id, channel="email"
        )
    return record, outbound_message(record, parent=parent)


class ChannelActivities:
    """prepare_reply and one send activity per channel, over one adapter per channel."""

    def __init__(self, deps: ActivityDeps) -> None:
        self.deps = deps
        self.adapters: dict[Channel, ChannelAdapter] = {
            "web_form": WebFormAdapter(),
            "whatsapp": WhatsAppAdapter(deps.settings),
            "email": GmailAdapter(deps.settings),
        }

    @activity.defn(name="prepare_reply")
    async def prepare_reply(self, inp: PrepareReplyInput) -> PreparedReply:
        """Format the reply for the channel and record it (pending) under its idempotency key."""
        async with transaction(self.deps.sessions) as session:
            existing = await messages.reply_part_ids(session, idempotency_key=inp.idempotency_key)
            if existing:
                return PreparedReply(message_ids=existing)
            body = await self._body(inp)
            style = await channel_configs.get_style(session, channel=inp.channel)
            customer_name = await conversations.customer_name(session, conversation_id=inp.conversation_id)
            parts = format_reply(
                body,
                style=style,
                customer_name=customer_name,
                ticket_number=inp.ticket_number,
                human_agent=inp.human_agent,
            )
            role = "human_agent" if inp.source == "human" else "agent"
            # Email goes out as plain text with an HTML alternative (real lists, bold, links).
            html = (
                email_html(
                    body,
                    style=style,
                    customer_name=customer_name,
                    ticket_number=inp.ticket_number,
                    human_agent=inp.human_agent,
                )
                if inp.channel == "email"
                else None
            )
            ids = []
            for index, part in enumerate(parts):
                key = inp.idempotency_key if len(parts) == 1 else f"{inp.idempotency_key}#{index + 1}"
                attributes: dict[str, object] = {
                    "part": index + 1,
                    "parts": len(parts),
                    "source": inp.source,
                    "human_agent": inp.human_agent,
                }
                if html is not None:
                    attributes["html"] = html
                ids.append(
                    await messages.record_outbound(
                        session,
                        conversation_id=inp.conversation_id,
                        channel=inp.channel,
                        role=role,
                        content=part,
                        idempotency_key=key,
                        attributes=attributes,
                    )
                )
            if inp.source == "human":
                # The one-step resolve records the escalation's resolution before this reply: a
                # `no_answer` gap it answered becomes a suggested KB entry now, not when someone
                # next opens the review panel (idempotent: one suggestion per escalation).
                answered = await escalations.last_resolved_id(
                    session, conversation_id=inp.conversation_id, reason="no_answer"
                )
                if answered is not None:
                    await learning.collect_suggestions(session, escalation_id=answered)
        return PreparedReply(message_ids=ids)

    async def _body(self, inp: PrepareReplyInput) -> str:
        if inp.source == "human":
            return inp.human_reply or ""
        if inp.source == "template":
            kind, _, reason = (inp.template or "").partition(":")
            if inp.template == "rating:ask":
                return await self._rating_request(inp)
            if kind != "escalation":
                raise ApplicationError(f"unknown reply template {inp.template!r}", non_retryable=True)
            settings = self.deps.settings
            async with self.deps.reads() as session:
                language = await conversations.language_of(session, conversation_id=inp.conversation_id)
                due = await escalations.open_sla_due(session, conversation_id=inp.conversation_id)
            hours = settings.escalation_sla_business_hours
            return holding_message(
                reason,
                language,
                # The escalation's own SLA deadline (business hours, from the workflow's clock).
                sla_hint=sla_hint(datetime.now(UTC), due, hours) if due else f"within {hours:g} business hours",
                # The same hours as the SLA timer's (BUSINESS_DAY_START_HOUR/END_HOUR).
                business_hours=business_hours_text(settings.business_day_start_hour, settings.business_day_end_hour),
            )
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

    async def _rating_request(self, inp: PrepareReplyInput) -> str:
        """The CSAT question; an email's carries one link per score to the ticket page (when links can be made)."""
        settings = self.deps.settings
        links: dict[int, str] | None = None
        if inp.channel == "email" and settings.ticket_links_configured:
            async with self.deps.reads() as session:
                ticket = await tickets.find_for_conversation(session, conversation_id=inp.conversation_id)
            secret, base = settings.ticket_link_secret, settings.customer_base_url
            if ticket is not None and secret is not None:
                token = ticket_token(secret.get_secret_value(), ticket.ticket_id)
                links = {n: rating_link(base, ticket.ticket_number, token, n) for n in range(1, 6)}
        return rating_request(inp.channel, links=links)

    async def _send(self, message_id: str) -> SendResult:
        async with self.deps.reads() as session:
            loaded = await load_outbound(session, message_id=message_id)
        if loaded is None:
            raise ApplicationError(f"outbound message {message_id} does not exist", non_retryable=True)
        record, outbound = loaded
        if record.delivery_status != "pending":
            # Already sent (or recorded as not configured) by an earlier attempt: never send twice.
            return SendResult(
                message_id=message_id,
                delivery_status=record.delivery_status,
                provider_message_id=record.provider_message_id,
            )
        adapter = self.adapters[record.channel]
        plan = WhatsAppPlan(outbound)
        if record.channel == "whatsapp":
            # A human reply after WhatsApp's 24-hour window goes as a template, by email, or not at all.
            async with self.deps.reads() as session:
                plan = await plan_whatsapp_send(
                    session, record=record, outbound=outbound, settings=self.deps.settings, now=datetime.now(UTC)
                )
            outbound = plan.outbound
            if plan.covered_by is not None:  # the first part's template or email went for the whole reply
                async with transaction(self.deps.sessions) as session:
                    await messages.record_send_result(
                        session,
                        message_id=message_id,
                        status=plan.covered_by.delivery_status,
                        provider_message_id=None,
                        attributes=plan.attributes,
                    )
                return SendResult(message_id=message_id, delivery_status=plan.covered_by.delivery_status)
            if outbound.late_reply is not None:
                log.info("whatsapp.late_reply", message_id=message_id, via=outbound.late_reply.via)
        found: Delivery | None = None
        attempted_at = record.attributes.get("send_attempted_at")
        if isinstance(attempted_at, str) and attempted_at:
            # An earlier attempt may have reached the provider and died (or lost PostgreSQL)
            # before recording it: look before sending again.
            async with self.deps.reads() as session:
                known = await messages.conversation_provider_ids(session, message_id=message_id)
            found = await adapter.find_sent(outbound, since=datetime.fromisoformat(attempted_at), known=known)
        if found is None:
            async with transaction(self.deps.sessions) as session:
                await messages.mark_send_attempted(
                    session, message_id=message_id, at=datetime.now(UTC), attributes=plan.attributes
                )
            try:
                status, provider_id = await adapter.send(outbound)
            except ApplicationError as exc:
                if exc.type == ErrorType.SEND_REJECTED:
                    # Final: the console shows the reply as failed; the workflow hands the
                    # conversation to a person.
                    async with transaction(self.deps.sessions) as session:
                        await messages.record_send_result(
                            session, message_id=message_id, status="failed", provider_message_id=None
                        )
                    log.warning("channel.reply_rejected", channel=record.channel, message_id=message_id, error=str(exc))
                raise
        else:
            status, provider_id = found
            log.warning(
                "channel.resend_avoided", channel=record.channel, message_id=message_id, provider_id=provider_id
            )
        async with transaction(self.deps.sessions) as session:
            await messages.record_send_result(
                session, message_id=message_id, status=status, provider_message_id=provider_id
            )
        if status == "not_configured":
            log.warning("channel.not_configured", channel=record.channel, message_id=message_id)
        else:
            log.info("channel.reply_sent", channel=record.channel, message_id=message_id, status=status)
        return SendResult(message_id=message_id, delivery_status=status, provider_message_id=provider_id)

    @activity.defn(name="send_web_form_reply")
    async def send_web_form_reply(self, inp: SendReplyInput) -> SendResult:
        """Publish the reply on the customer's ticket page, then email them a notice with the page's secure link."""
        result = await self._send(inp.message_id)
        if result.delivery_status == "delivered":
            await self._reply_notice(inp.message_id)
        return result

    async def _reply_notice(self, message_id: str) -> None:
        """One notice per outbound message, best effort: never raises, never sends twice.

        The outcome is recorded on the message (attribute `reply_notice`); a message that has one
        is not noticed again. A retried attempt whose earlier notice reached Gmail but was not
        recorded finds it by its Message-ID (`GmailAdapter`) instead of sending another.
        """
        try:
            async with self.deps.reads() as session:
                record = await messages.get_outbound(session, message_id=message_id)
                target = (
                    await tickets.notice_target(session, conversation_id=record.conversation_id)
                    if record is not None
                    else None
                )
            if record is None or "reply_notice" in record.attributes:
                return
            outcome = await self._compose_and_send_notice(message_id, target)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the reply is on the page: a notice problem is only recorded
            outcome = {"status": "failed", "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        outcome["at"] = datetime.now(UTC).isoformat()
        level = log.info if outcome["status"] == "sent" else log.warning
        level("channel.reply_notice", message_id=message_id, **{k: v for k, v in outcome.items() if k != "at"})
        try:
            async with transaction(self.deps.sessions) as session:
                await messages.record_reply_notice(session, message_id=message_id, notice=outcome)
        except Exception as exc:  # not recorded: a retried attempt asks Gmail before sending again
            log.warning("channel.reply_notice_unrecorded", message_id=message_id, error=type(exc).__name__)

    async def _compose_and_send_notice(self, message_id: str, target: tickets.NoticeTarget | None) -> dict[str, Any]:
        s = self.deps.settings
        if target is None or target.source_channel != "web_form":
            return {"status": "skipped", "reason": "no_web_form_ticket"}
        if not target.contact_email:
            return {"status": "skipped", "reason": "no_contact_email"}
        if s.ticket_link_secret is None:
            # Fail closed: without the key there is no link to send.
            return {"status": "skipped", "reason": "ticket_links_not_configured"}
        if not s.gmail_configured:
            return {"status": "not_configured"}
        token = ticket_token(s.ticket_link_secret.get_secret_value(), target.ticket_id)
        return await send_reply_notice(
            s,
            message_id=message_id,
            ticket_number=target.ticket_number,
            to=target.contact_email,
            link=ticket_link(s.customer_base_url, target.ticket_number, token),
        )

    @activity.defn(name="send_whatsapp_reply")
    async def send_whatsapp_reply(self, inp: SendReplyInput) -> SendResult:
        """Send the reply through Twilio's WhatsApp API (once per outbound message)."""
        return await self._send(inp.message_id)

    @activity.defn(name="send_email_reply")
    async def send_email_reply(self, inp: SendReplyInput) -> SendResult:
        """Send the reply by email in the customer's thread (once per outbound message)."""
        return await self._send(inp.message_id)


class GmailWatchActivities:
    """The Gmail push-watch renewal, run by GmailWatchWorkflow on a schedule."""

    def __init__(self, deps: ActivityDeps) -> None:
        self.deps = deps

    @activity.defn(name=RENEW_GMAIL_WATCH_ACTIVITY)
    async def renew_gmail_watch(self, inp: GmailWatchInput) -> GmailWatchResult:
        """Call `users.watch` for the support mailbox's INBOX; store the baseline (first time) and expiry."""
        s = self.deps.settings
        if not (s.gmail_configured and s.gmail_user_email and s.gmail_watch_topic):
            raise ApplicationError(
                "Gmail watch needs GMAIL_USER_EMAIL, GMAIL_CLIENT_ID, GMAIL_REFRESH_TOKEN and GMAIL_WATCH_TOPIC",
                type=ErrorType.GMAIL_NOT_CONFIGURED,
                non_retryable=True,
            )
        mailbox = s.gmail_user_email.strip().lower()
        watch = await asyncio.to_thread(watch_inbox, s, s.gmail_watch_topic)
        history_id = int(watch["historyId"])
        expiration = (
            datetime.fromtimestamp(int(watch["expiration"]) / 1000, tz=UTC) if watch.get("expiration") else None
        )
        async with transaction(self.deps.sessions) as session:
            stored = await gmail_sync.record_watch(
                session, mailbox=mailbox, history_id=history_id, expiration=expiration
            )
        log.info(
            "gmail.watch_renewed",
            mailbox=mailbox,
            expiration=expiration.isoformat() if expiration else None,
            baseline_stored=stored.baseline_stored,
        )
        return GmailWatchResult(
            mailbox=mailbox, history_id=stored.history_id, expiration=expiration, baseline_stored=stored.baseline_stored
        )
