"""WhatsApp through Twilio's Messages API (the official client); base URL overridable for tests and proxies.

A human reply after WhatsApp's 24-hour window closed arrives here with `late_reply` set by the send
activity (core/whatsapp_window.py decides): it goes as the approved template (`content_sid` and
`content_variables` instead of `body`), or by email through the support mailbox (the Gmail
adapter's own sending code), or is refused as final.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from temporalio.exceptions import ApplicationError

from activities.channels.gmail import GmailAdapter
from activities.channels.port import Delivery, EmailThread, OutboundMessage
from core.settings import Settings
from workflows.contracts import ErrorType

# Twilio's clock and ours may disagree: a message created this long before the recorded attempt
# may still be that attempt's.
CLOCK_SKEW = timedelta(minutes=5)
# How many of the recipient's latest messages `find_sent` looks through.
RECENT_MESSAGES = 50


def whatsapp_address(number: str) -> str:
    """Twilio's address form of a WhatsApp number: `whatsapp:+4915...`."""
    return number if number.startswith("whatsapp:") else f"whatsapp:{number}"


class WhatsAppAdapter:
    """Sends with `messages.create`; finds an interrupted attempt's message with `messages.list`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: Any = None
        # Late replies by email leave through the support mailbox, exactly as email replies do.
        self.email = GmailAdapter(settings)

    def _twilio(self) -> Any:
        # Built on first use: a worker without Twilio credentials never imports the client.
        if self._client is None:
            from twilio.rest import Client

            s = self.settings
            if s.twilio_auth_token is None:
                raise RuntimeError("Twilio is not configured (TWILIO_AUTH_TOKEN)")
            client = Client(s.twilio_account_sid, s.twilio_auth_token.get_secret_value())
            if s.twilio_api_base_url:
                client.api.base_url = s.twilio_api_base_url.rstrip("/")
            self._client = client
        return self._client

    def _addresses(self, message: OutboundMessage) -> tuple[str, str] | None:
        """(from, to) in Twilio's WhatsApp form; None without credentials, a sender number or a recipient."""
        s = self.settings
        if not s.twilio_configured or not s.twilio_whatsapp_from or not message.to_phone:
            return None
        return whatsapp_address(s.twilio_whatsapp_from), whatsapp_address(message.to_phone)

    async def send(self, message: OutboundMessage) -> Delivery:
        """Hand the message to Twilio; `not_configured` without credentials or a recipient."""
        late = message.late_reply
        if late is not None and late.via == "undeliverable":
            raise ApplicationError(
                "outside WhatsApp's 24-hour window, with no approved template configured "
                "(WHATSAPP_LATE_REPLY_CONTENT_SID) and no verified email address to write to",
                type=ErrorType.SEND_REJECTED,
                non_retryable=True,
            )
        if late is not None and late.via == "email":
            return await self.email.send(
                OutboundMessage(
                    message_id=message.message_id,
                    channel="email",
                    content=late.email_body or message.content,
                    to_email=late.email_to,
                    to_phone=None,
                    attributes={},
                    # A new thread: the customer never wrote to the mailbox about this.
                    email_thread=EmailThread(subject=late.email_subject),
                )
            )
        addresses = self._addresses(message)
        if addresses is None:
            return Delivery("not_configured", None)
        from twilio.base.exceptions import TwilioRestException

        s = self.settings
        from_, to = addresses
        kwargs: dict[str, object] = {"from_": from_, "to": to}
        if late is not None and late.via == "template":
            # An approved template instead of free text: Twilio takes ContentSid + ContentVariables.
            kwargs["content_sid"] = late.content_sid
            if late.content_variables:
                kwargs["content_variables"] = late.content_variables
        else:
            kwargs["body"] = message.content
        if s.public_base_url:
            kwargs["status_callback"] = f"{str(s.public_base_url).rstrip('/')}/api/v1/webhooks/whatsapp/status"
        try:
            sent = await asyncio.to_thread(lambda: self._twilio().messages.create(**kwargs))
        except TwilioRestException as exc:
            if exc.status in (429,) or exc.status >= 500:
                raise  # transient: Temporal retries
            raise ApplicationError(
                f"Twilio rejected the message: {exc.code} {exc.msg}", type=ErrorType.SEND_REJECTED, non_retryable=True
            ) from exc
        return Delivery(str(sent.status or "queued"), str(sent.sid))

    async def find_sent(self, message: OutboundMessage, *, since: datetime, known: set[str]) -> Delivery | None:
        """The message an earlier, interrupted attempt already handed to Twilio, if any.

        Twilio's Messages API has no idempotency key, so we look for our own message: same
        recipient and body, created after the attempt was recorded (minus clock skew), and not
        already recorded against another of our rows (`known`). A template's body is the text
        Twilio rendered, which we do not know: any such message to the recipient is taken.
        An email sent for a late reply is found by the Gmail adapter itself (its Message-ID).
        """
        late = message.late_reply
        if late is not None and late.via != "template":
            return None
        addresses = self._addresses(message)
        if addresses is None:
            return None
        from_, to = addresses
        recent = await asyncio.to_thread(
            lambda: self._twilio().messages.list(to=to, from_=from_, limit=RECENT_MESSAGES)
        )
        for sent in recent:
            created = sent.date_created
            if sent.sid in known:
                continue
            if late is not None:
                if created is not None and created >= since - CLOCK_SKEW:
                    return Delivery(str(sent.status or "queued"), str(sent.sid))
                continue
            if sent.body != message.content:
                continue
            if created is None or created >= since - CLOCK_SKEW:
                return Delivery(str(sent.status or "queued"), str(sent.sid))
        return None
