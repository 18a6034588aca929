"""CSAT: one rating per conversation (1-5, an optional comment, where it came from); reason
"low_rating" for the escalation a low score opens.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out here, not imported: a migration is history (see docs/architecture.md).
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
    "delivery_failed",
    "taken_over",
)
_REASONS = (*_OLD_REASONS, "low_rating")
_VIAS = ("reply", "ticket_page", "email_link")


def _in(words: Sequence[str]) -> str:
    return "(" + ", ".join(f"'{w}'" for w in words) + ")"


def upgrade() -> None:
    op.execute("ALTER TABLE escalations DROP CONSTRAINT ck_escalations_reason")
    op.execute(f"ALTER TABLE escalations ADD CONSTRAINT ck_escalations_reason CHECK (reason IN {_in(_REASONS)})")
    op.execute(
        f"""
        CREATE TABLE csat_ratings (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            conversation_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
            channel text NOT NULL,
            score integer NOT NULL,
            comment text,
            via text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT uq_csat_ratings_conversation UNIQUE (conversation_id),
            CONSTRAINT ck_csat_ratings_score CHECK (score BETWEEN 1 AND 5),
            CONSTRAINT ck_csat_ratings_via CHECK (via IN {_in(_VIAS)}),
            CONSTRAINT ck_csat_ratings_comment CHECK (comment IS NULL OR length(comment) BETWEEN 1 AND 1000)
        )
        """
    )
    op.execute("CREATE INDEX ix_csat_ratings_created_at ON csat_ratings (created_at)")


def downgrade() -> None:
    op.execute("DROP TABLE csat_ratings")
    op.execute("UPDATE escalations SET reason = 'negative_sentiment' WHERE reason = 'low_rating'")
    op.execute("ALTER TABLE escalations DROP CONSTRAINT ck_escalations_reason")
    op.execute(f"ALTER TABLE escalations ADD CONSTRAINT ck_escalations_reason CHECK (reason IN {_in(_OLD_REASONS)})")
