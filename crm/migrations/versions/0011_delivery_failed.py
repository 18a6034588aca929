"""Escalation reason "delivery_failed": the channel refused a reply, so a person takes over.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The reasons as 0007 left them, for the downgrade.
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
    "language",
)
_REASONS = (*_OLD_REASONS, "delivery_failed")


def _in(words: Sequence[str]) -> str:
    return "(" + ", ".join(f"'{w}'" for w in words) + ")"


def upgrade() -> None:
    op.execute("ALTER TABLE escalations DROP CONSTRAINT ck_escalations_reason")
    op.execute(f"ALTER TABLE escalations ADD CONSTRAINT ck_escalations_reason CHECK (reason IN {_in(_REASONS)})")


def downgrade() -> None:
    op.execute("UPDATE escalations SET reason = 'model_error' WHERE reason = 'delivery_failed'")
    op.execute("ALTER TABLE escalations DROP CONSTRAINT ck_escalations_reason")
    op.execute(f"ALTER TABLE escalations ADD CONSTRAINT ck_escalations_reason CHECK (reason IN {_in(_OLD_REASONS)})")
