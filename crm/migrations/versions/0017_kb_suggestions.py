"""Suggested knowledge-base entries learned from resolved `no_answer` escalations (issue 17).

One row per escalation (UNIQUE): the customer's question and the person's answer, `pending` until an
agent approves it (it is then embedded into `knowledge_base` as article `learned-<id>`, named in
`article_id`) or rejects it. `reviewed_at` of approved rows is what the daily report counts as gaps closed.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out here, not imported: a migration is history (see docs/architecture.md).
_STATUSES = ("pending", "approved", "rejected")


def upgrade() -> None:
    words = ", ".join(f"'{w}'" for w in _STATUSES)
    op.execute(
        f"""
        CREATE TABLE kb_suggestions (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            conversation_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
            escalation_id uuid NOT NULL REFERENCES escalations (id) ON DELETE CASCADE,
            question text NOT NULL CONSTRAINT ck_kb_suggestions_question
                CHECK (length(btrim(question)) BETWEEN 1 AND 2000),
            answer text NOT NULL CONSTRAINT ck_kb_suggestions_answer CHECK (length(btrim(answer)) BETWEEN 1 AND 5000),
            status text NOT NULL DEFAULT 'pending' CONSTRAINT ck_kb_suggestions_status CHECK (status IN ({words})),
            edited_by text,
            reviewed_by text,
            reviewed_at timestamptz,
            article_id text,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT uq_kb_suggestions_escalation UNIQUE (escalation_id),
            CONSTRAINT ck_kb_suggestions_reviewed CHECK (
                (status = 'pending') = (reviewed_at IS NULL) AND (reviewed_by IS NULL) = (reviewed_at IS NULL)
            ),
            CONSTRAINT ck_kb_suggestions_article CHECK ((status = 'approved') = (article_id IS NOT NULL))
        )
        """
    )
    op.execute("CREATE INDEX ix_kb_suggestions_status ON kb_suggestions (status, created_at)")
    op.execute("CREATE INDEX ix_kb_suggestions_approved ON kb_suggestions (reviewed_at) WHERE status = 'approved'")
    op.execute("CREATE INDEX ix_kb_suggestions_conversation ON kb_suggestions (conversation_id)")


def downgrade() -> None:
    op.execute("DROP TABLE kb_suggestions")
