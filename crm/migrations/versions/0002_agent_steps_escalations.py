"""Agent steps (model turns and tool results, kept out of workflow history) and escalations.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE agent_steps (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            conversation_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
            turn integer NOT NULL,
            step integer NOT NULL,
            role text NOT NULL,
            tool_call_id text,
            payload jsonb NOT NULL,
            prompt_tokens integer NOT NULL DEFAULT 0,
            completion_tokens integer NOT NULL DEFAULT 0,
            cost_usd numeric(12, 6) NOT NULL DEFAULT 0,
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT ck_agent_steps_role CHECK (role IN ('assistant', 'tool')),
            CONSTRAINT uq_agent_steps_turn_step_call
                UNIQUE NULLS NOT DISTINCT (conversation_id, turn, step, tool_call_id)
        )
        """
    )
    op.execute("CREATE INDEX ix_agent_steps_conversation_turn ON agent_steps (conversation_id, turn, step)")
    op.execute(
        """
        CREATE TABLE escalations (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            conversation_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
            ticket_id uuid REFERENCES tickets (id) ON DELETE SET NULL,
            reason text NOT NULL,
            priority text NOT NULL,
            status text NOT NULL DEFAULT 'open',
            sla_due_at timestamptz NOT NULL,
            notified_count integer NOT NULL DEFAULT 0,
            resolved_by text,
            resolution_action text,
            resolved_at timestamptz,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT ck_escalations_reason CHECK (reason IN ('pricing', 'refund', 'legal', 'human_request',
                'negative_sentiment', 'security', 'unsafe_output', 'model_error', 'budget', 'no_answer',
                'agent_requested')),
            CONSTRAINT ck_escalations_priority CHECK (priority IN ('low', 'medium', 'high', 'urgent')),
            CONSTRAINT ck_escalations_status CHECK (status IN ('open', 'resolved')),
            CONSTRAINT ck_escalations_action CHECK (resolution_action IS NULL
                OR resolution_action IN ('resume_ai', 'close'))
        )
        """
    )
    # At most one open escalation per conversation: recording it twice (a retried activity) is a no-op.
    op.execute(
        "CREATE UNIQUE INDEX uq_escalations_open_per_conversation ON escalations (conversation_id) "
        "WHERE status = 'open'"
    )
    op.execute("CREATE INDEX ix_escalations_queue ON escalations (status, created_at)")
    op.execute(
        "CREATE TRIGGER trg_escalations_updated_at BEFORE UPDATE ON escalations "
        "FOR EACH ROW EXECUTE FUNCTION set_updated_at()"
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS escalations")
    op.execute("DROP TABLE IF EXISTS agent_steps")
