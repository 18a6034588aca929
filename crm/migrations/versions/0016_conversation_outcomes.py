"""How each conversation ended: `outcome` and `outcome_at`, written once when it closes.

The workflow decides (see `ConversationOutcome` in core/vocabulary.py); a conversation closed again
keeps its first outcome. Conversations closed before this migration have none (NULL): reports count
them as closed without an outcome rather than guessing.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out here, not imported: a migration is history (see docs/architecture.md).
_OUTCOMES = ("resolved_by_ai", "resolved_by_human", "abandoned")


def upgrade() -> None:
    words = ", ".join(f"'{w}'" for w in _OUTCOMES)
    op.execute(
        "ALTER TABLE conversations ADD COLUMN outcome text, ADD COLUMN outcome_at timestamptz, "
        f"ADD CONSTRAINT ck_conversations_outcome CHECK (outcome IN ({words})), "
        "ADD CONSTRAINT ck_conversations_outcome_at CHECK ((outcome IS NULL) = (outcome_at IS NULL))"
    )
    op.execute("CREATE INDEX ix_conversations_outcome_at ON conversations (outcome_at) WHERE outcome IS NOT NULL")


def downgrade() -> None:
    op.execute("DROP INDEX ix_conversations_outcome_at")
    op.execute(
        "ALTER TABLE conversations DROP CONSTRAINT ck_conversations_outcome_at, "
        "DROP CONSTRAINT ck_conversations_outcome, DROP COLUMN outcome, DROP COLUMN outcome_at"
    )
