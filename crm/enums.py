"""The CRM's enumerations, shared by code and checked by the database (CHECK constraints)."""

from __future__ import annotations

CHANNELS = ("email", "whatsapp", "web_form")
IDENTIFIER_TYPES = ("email", "phone")
CONVERSATION_STATUSES = ("active", "escalated", "resolved", "closed")
MESSAGE_DIRECTIONS = ("inbound", "outbound")
MESSAGE_ROLES = ("customer", "agent", "human_agent", "system")
DELIVERY_STATUSES = (
    "received",  # inbound, stored
    "pending",  # outbound, recorded before the send
    "queued",
    "sent",
    "delivered",
    "read",
    "failed",
    "undelivered",
    "not_configured",  # the channel has no credentials: recorded, not sent
)
TICKET_CATEGORIES = ("how_to", "bug", "billing", "account", "feature_request", "other")
TICKET_PRIORITIES = ("low", "medium", "high", "urgent")
TICKET_STATUSES = ("open", "in_progress", "escalated", "resolved", "closed")
PLANS = ("free", "starter", "pro", "enterprise")
