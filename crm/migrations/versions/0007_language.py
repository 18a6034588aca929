"""The language of each inbound message and of its conversation; escalation reason "language".

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The reasons as they were before "language" (0002), for the downgrade.
_OLD_REASONS = (
    "pricing",
    "refund",
    "legal",
    "human_request",
    "negative_sentiment",
    "security",
    "unsafe_output",
    "model_error",
    "budget",
    "no_answer",
    "agent_requested",
)
# Spelled out rather than imported from core.vocabulary: a migration records the schema of its day,
# and tests/crm/test_check_constraints.py asserts the result equals the vocabulary.
_REASONS = (*_OLD_REASONS, "language")
# ISO 639-1 codes as the detector returns them (lower case, two letters); NULL when undetected.
_LANGUAGE_CHECK = "language IS NULL OR language ~ '^[a-z]{2}$'"


def _in(words: Sequence[str]) -> str:
    return "(" + ", ".join(f"'{w}'" for w in words) + ")"


def upgrade() -> None:
    op.execute(
        f"ALTER TABLE messages ADD COLUMN language text CONSTRAINT ck_messages_language CHECK ({_LANGUAGE_CHECK})"
    )
    op.execute(
        "ALTER TABLE conversations ADD COLUMN language text "
        f"CONSTRAINT ck_conversations_language CHECK ({_LANGUAGE_CHECK})"
    )
    op.execute("ALTER TABLE escalations DROP CONSTRAINT ck_escalations_reason")
    op.execute(f"ALTER TABLE escalations ADD CONSTRAINT ck_escalations_reason CHECK (reason IN {_in(_REASONS)})")


def downgrade() -> None:
    op.execute("DELETE FROM escalations WHERE reason = 'language'")
    op.execute("ALTER TABLE escalations DROP CONSTRAINT ck_escalations_reason")
    op.execute(f"ALTER TABLE escalations ADD CONSTRAINT ck_escalations_reason CHECK (reason IN {_in(_OLD_REASONS)})")
    op.execute("ALTER TABLE conversations DROP COLUMN language")
    op.execute("ALTER TABLE messages DROP COLUMN language")
