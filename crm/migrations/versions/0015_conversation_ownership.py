"""Who owns a conversation: escalations get an assignee; hand-back notes; reason "taken_over".

A person claims a waiting conversation, gives it to a colleague, or takes one from the AI (a new
escalation with reason `taken_over`); the workflow holds the assignee (and the `Assignee` search
attribute) and mirrors it here for the queue's "mine" and "unassigned" filters. A note written when a
person hands a conversation back to the AI is a note of kind `hand_back`: the only kind the model reads.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The reasons as 0011 left them, for the downgrade.
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
)
_REASONS = (*_OLD_REASONS, "taken_over")
_NOTE_KINDS = ("note", "hand_back")


def _in(words: Sequence[str]) -> str:
    return "(" + ", ".join(f"'{w}'" for w in words) + ")"


def upgrade() -> None:
    op.execute("ALTER TABLE escalations DROP CONSTRAINT ck_escalations_reason")
    op.execute(f"ALTER TABLE escalations ADD CONSTRAINT ck_escalations_reason CHECK (reason IN {_in(_REASONS)})")
    # responded_at: a person's first reply; the SLA (time to a human's first answer) is met from then.
    op.execute(
        "ALTER TABLE escalations ADD COLUMN assignee text, ADD COLUMN assigned_at timestamptz, "
        "ADD COLUMN responded_at timestamptz"
    )
    op.execute(
        "ALTER TABLE escalations ADD CONSTRAINT ck_escalations_assignee "
        "CHECK ((assignee IS NULL) = (assigned_at IS NULL) "
        "AND (assignee IS NULL OR length(btrim(assignee)) BETWEEN 1 AND 200))"
    )
    op.execute("CREATE INDEX ix_escalations_open_assignee ON escalations (assignee) WHERE status = 'open'")
    op.execute(
        f"ALTER TABLE conversation_notes ADD COLUMN kind text NOT NULL DEFAULT 'note' "
        f"CONSTRAINT ck_conversation_notes_kind CHECK (kind IN {_in(_NOTE_KINDS)})"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE conversation_notes DROP COLUMN kind")
    op.execute("DROP INDEX ix_escalations_open_assignee")
    op.execute("ALTER TABLE escalations DROP CONSTRAINT ck_escalations_assignee")
    op.execute("ALTER TABLE escalations DROP COLUMN assignee, DROP COLUMN assigned_at, DROP COLUMN responded_at")
    op.execute("UPDATE escalations SET reason = 'human_request' WHERE reason = 'taken_over'")
    op.execute("ALTER TABLE escalations DROP CONSTRAINT ck_escalations_reason")
    op.execute(f"ALTER TABLE escalations ADD CONSTRAINT ck_escalations_reason CHECK (reason IN {_in(_OLD_REASONS)})")
