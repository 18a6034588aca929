"""The database's CHECK constraints list exactly the words of core/vocabulary.py."""

from __future__ import annotations

import re

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from core import vocabulary as v

# Every CHECK constraint that restricts a column to a list of words, and the vocabulary it must equal.
EXPECTED: dict[str, tuple[str, ...]] = {
    "ck_customers_plan": v.PLANS,
    "ck_customer_identifiers_type": v.IDENTIFIER_TYPES,
    "ck_customer_identifiers_channel": v.CHANNELS,
    "ck_customer_identifiers_verified_via": v.IDENTIFIER_PROOFS,
    "ck_identity_confirmations_type": v.IDENTIFIER_TYPES,
    "ck_conversations_channel": v.CHANNELS,
    "ck_conversations_status": v.CONVERSATION_STATUSES,
    "ck_messages_channel": v.CHANNELS,
    "ck_messages_direction": v.MESSAGE_DIRECTIONS,
    "ck_messages_role": v.MESSAGE_ROLES,
    "ck_messages_delivery_status": v.DELIVERY_STATUSES,
    "ck_tickets_category": v.TICKET_CATEGORIES,
    "ck_tickets_priority": v.PRIORITIES,
    "ck_tickets_status": v.TICKET_STATUSES,
    "ck_tickets_source_channel": v.CHANNELS,
    "ck_channel_configs_channel": v.CHANNELS,
    "ck_channel_configs_tone": v.CHANNEL_TONES,
    "ck_agent_metrics_channel": v.CHANNELS,
    "ck_agent_steps_role": v.AGENT_STEP_ROLES,
    "ck_escalations_reason": v.ESCALATION_REASONS,
    "ck_escalations_priority": v.PRIORITIES,
    "ck_escalations_status": v.ESCALATION_STATUSES,
    "ck_escalations_action": v.RESOLUTION_ACTIONS,
    "ck_notification_deliveries_kind": v.NOTIFICATION_KINDS,
    "ck_notification_deliveries_sink": v.NOTIFICATION_SINKS,
    "ck_notification_deliveries_status": v.NOTIFICATION_DELIVERY_STATUSES,
    "ck_conversation_notes_kind": v.NOTE_KINDS,
    "ck_conversations_outcome": v.CONVERSATION_OUTCOMES,
    "ck_daily_report_deliveries_sink": v.NOTIFICATION_SINKS,
    "ck_daily_report_deliveries_status": v.NOTIFICATION_DELIVERY_STATUSES,
    "ck_csat_ratings_via": v.RATING_VIAS,
    "ck_kb_suggestions_status": v.KB_SUGGESTION_STATUSES,
}
_LITERAL = re.compile(r"'((?:[^']|'')*)'::")


def words_of(definition: str) -> set[str]:
    """The string literals of a CHECK definition as PostgreSQL prints it (`... = ANY (ARRAY['a'::text, ...])`)."""
    return {m.replace("''", "'") for m in _LITERAL.findall(definition)}


async def _checks(session: AsyncSession) -> dict[str, str]:
    rows = await session.execute(
        text(
            "SELECT conname, pg_get_constraintdef(oid) AS definition FROM pg_constraint "
            "WHERE contype = 'c' AND connamespace = 'public'::regnamespace"
        )
    )
    return {r.conname: r.definition for r in rows}


async def test_check_constraints_equal_the_vocabulary(session: AsyncSession) -> None:
    checks = await _checks(session)
    for name, words in EXPECTED.items():
        assert name in checks, f"no CHECK constraint {name}"
        assert words_of(checks[name]) == set(words), f"{name}: {checks[name]}"


async def test_every_word_list_constraint_is_compared(session: AsyncSession) -> None:
    checks = await _checks(session)
    listing = {name for name, definition in checks.items() if "ANY (ARRAY[" in definition}
    assert listing, "PostgreSQL printed no word-list constraint: the parser above would compare nothing"
    assert listing <= set(EXPECTED), f"word-list constraints not tied to the vocabulary: {listing - set(EXPECTED)}"


def test_the_parser_reads_postgres_output() -> None:
    printed = "CHECK (((status)::text = ANY ((ARRAY['open'::character varying, 'it''s'::character varying])::text[])))"
    assert words_of(printed) == {"open", "it's"}
