"""Human agents: hashed API keys with scopes, and the audit trail of what each person did.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Only the SHA-256 of the random secret is stored; the full key is shown once, at creation.
    # `key_prefix` is the public, random part of the key that finds the row without a scan.
    op.execute(
        """
        CREATE TABLE api_keys (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            name text NOT NULL,
            key_prefix text NOT NULL,
            key_hash text NOT NULL,
            scopes text[] NOT NULL DEFAULT '{}',
            created_at timestamptz NOT NULL DEFAULT now(),
            revoked_at timestamptz,
            last_used_at timestamptz,
            CONSTRAINT uq_api_keys_key_prefix UNIQUE (key_prefix),
            CONSTRAINT ck_api_keys_name CHECK (length(btrim(name)) BETWEEN 1 AND 100),
            CONSTRAINT ck_api_keys_key_hash CHECK (key_hash ~ '^[0-9a-f]{64}$')
        )
        """
    )
    # One active key per name (the name is the person the replies are signed with); a revoked key
    # keeps its row for the audit trail, so the same person can be issued a new key.
    op.execute("CREATE UNIQUE INDEX uq_api_keys_active_name ON api_keys (name) WHERE revoked_at IS NULL")
    # Append-only: who (key and name), when, what (action, ticket, conversation, details).
    # Rows outlive the key and the conversation they mention, hence ON DELETE SET NULL.
    op.execute(
        """
        CREATE TABLE human_actions (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            api_key_id uuid REFERENCES api_keys (id) ON DELETE SET NULL,
            agent_name text NOT NULL,
            action text NOT NULL,
            ticket_number text,
            conversation_id uuid REFERENCES conversations (id) ON DELETE SET NULL,
            detail jsonb NOT NULL DEFAULT '{}',
            created_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX ix_human_actions_created_at ON human_actions (created_at)")
    op.execute("CREATE INDEX ix_human_actions_ticket_number ON human_actions (ticket_number, created_at)")
    op.execute("CREATE INDEX ix_human_actions_conversation_id ON human_actions (conversation_id, created_at)")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS human_actions")
    op.execute("DROP TABLE IF EXISTS api_keys")
