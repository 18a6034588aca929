"""Internal notes on conversations (never sent to the customer) and the team's saved replies.

`conversation_notes` is a table of its own, not a kind of message: everything that reads
`messages` (the model's transcript, the customer's ticket page, the reply pipeline) can never pick
a note up. `saved_replies` are the team's canned answers; a title is unique whatever its case.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out here, not imported: a migration is history (see docs/architecture.md).
_NOTE_MAX_CHARS = 5000
_SAVED_REPLY_TITLE_MAX_CHARS = 120
_SAVED_REPLY_BODY_MAX_CHARS = 5000


def upgrade() -> None:
    op.execute(
        f"""
        CREATE TABLE conversation_notes (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            conversation_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
            api_key_id uuid REFERENCES api_keys (id) ON DELETE SET NULL,
            author text NOT NULL,
            body text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT ck_conversation_notes_body CHECK (length(btrim(body)) BETWEEN 1 AND {_NOTE_MAX_CHARS}),
            CONSTRAINT ck_conversation_notes_author CHECK (length(btrim(author)) BETWEEN 1 AND 100)
        )
        """
    )
    op.execute("CREATE INDEX ix_conversation_notes_conversation_id ON conversation_notes (conversation_id, created_at)")
    op.execute(
        f"""
        CREATE TABLE saved_replies (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            title text NOT NULL,
            body text NOT NULL,
            created_by text NOT NULL,
            updated_by text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT ck_saved_replies_title CHECK (length(btrim(title)) BETWEEN 1 AND {_SAVED_REPLY_TITLE_MAX_CHARS}),
            CONSTRAINT ck_saved_replies_body CHECK (length(btrim(body)) BETWEEN 1 AND {_SAVED_REPLY_BODY_MAX_CHARS})
        )
        """
    )
    op.execute("CREATE UNIQUE INDEX uq_saved_replies_title ON saved_replies (lower(title))")
    op.execute(
        "CREATE TRIGGER trg_saved_replies_updated_at BEFORE UPDATE ON saved_replies "
        "FOR EACH ROW EXECUTE FUNCTION set_updated_at()"
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS saved_replies")
    op.execute("DROP TABLE IF EXISTS conversation_notes")
