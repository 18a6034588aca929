"""Tickets remember the email address that filed them: the ticket page opens for that address only.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Customer records are unified across channels on unverified identifiers (a phone typed into the
    # web form); access to a ticket page must not follow that unification.
    op.execute("ALTER TABLE tickets ADD COLUMN contact_email text")
    op.execute(
        "UPDATE tickets t SET contact_email = lower(cu.email) FROM customers cu "
        "WHERE cu.id = t.customer_id AND t.source_channel = 'web_form'"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE tickets DROP COLUMN IF EXISTS contact_email")
