"""A turn's metric points are recorded once, however often the activity that records them runs.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # record_turn_metrics runs again after a worker crash or a reset; points carrying a turn number
    # are unique per conversation, metric and turn (older points without one are untouched).
    op.execute(
        "CREATE UNIQUE INDEX ux_agent_metrics_turn ON agent_metrics (conversation_id, metric_type, "
        "((dimensions->>'turn'))) WHERE dimensions ? 'turn'"
    )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ux_agent_metrics_turn")
