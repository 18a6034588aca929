"""Custom search attributes an operator filters conversations by in the Temporal UI."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

CUSTOMER_EMAIL = SearchAttributeKey.for_keyword("CustomerEmail")
CUSTOMER_PHONE = SearchAttributeKey.for_keyword("CustomerPhone")
CHANNEL = SearchAttributeKey.for_keyword("Channel")
TICKET_NUMBER = SearchAttributeKey.for_keyword("TicketNumber")
CONVERSATION_STATUS = SearchAttributeKey.for_keyword("ConversationStatus")
ESCALATED = SearchAttributeKey.for_bool("Escalated")
# ISO 639-1 code of the customer's language, as the inbound guardrails detected it.
LANGUAGE = SearchAttributeKey.for_keyword("Language")
# The person who owns the conversation while a person does (unset: the AI or the queue).
ASSIGNEE = SearchAttributeKey.for_keyword("Assignee")

ALL_KEYS = (CUSTOMER_EMAIL, CUSTOMER_PHONE, CHANNEL, TICKET_NUMBER, CONVERSATION_STATUS, ESCALATED, LANGUAGE, ASSIGNEE)
