"""The web support form: replies are shown on the customer's ticket page."""

from __future__ import annotations

from datetime import datetime

from activities.channels.port import Delivery, OutboundMessage


class WebFormAdapter:
    """Storing the reply is its delivery: the ticket page reads it from the CRM."""

    async def send(self, message: OutboundMessage) -> Delivery:
        """Nothing to send: the stored reply is already on the ticket page."""
        return Delivery("delivered", None)

    async def find_sent(self, message: OutboundMessage, *, since: datetime, known: set[str]) -> Delivery | None:
        """Never an earlier delivery to find: `send` has no side effect to repeat."""
        return None
