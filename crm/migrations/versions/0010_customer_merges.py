"""Customer merges a human controls (and can undo), and erased customers kept as tombstones.

`customers.merged_into`: a merged-away customer keeps its row, pointing at the record it was merged
into, so an unmerge can bring it back. `customers.erased_at`: a GDPR erasure nulls the personal
fields and keeps the row, so foreign keys and counts still hold. `customer_merges` records who
merged what, why, and exactly which rows moved (`moved`), which is what an unmerge moves back.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE customers ADD COLUMN merged_into uuid REFERENCES customers (id) ON DELETE RESTRICT")
    op.execute("ALTER TABLE customers ADD COLUMN erased_at timestamptz")
    op.execute(
        "ALTER TABLE customers ADD CONSTRAINT ck_customers_not_merged_into_itself "
        "CHECK (merged_into IS NULL OR merged_into <> id)"
    )
    op.execute("CREATE INDEX ix_customers_merged_into ON customers (merged_into) WHERE merged_into IS NOT NULL")
    op.execute(
        """
        CREATE TABLE customer_merges (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            source_customer_id uuid NOT NULL REFERENCES customers (id) ON DELETE RESTRICT,
            target_customer_id uuid NOT NULL REFERENCES customers (id) ON DELETE RESTRICT,
            actor text NOT NULL,
            reason text NOT NULL,
            moved jsonb NOT NULL DEFAULT '{}',
            merged_at timestamptz NOT NULL DEFAULT now(),
            unmerged_at timestamptz,
            unmerged_by text,
            CONSTRAINT ck_customer_merges_two_customers CHECK (source_customer_id <> target_customer_id),
            CONSTRAINT ck_customer_merges_unmerged_by CHECK ((unmerged_at IS NULL) = (unmerged_by IS NULL))
        )
        """
    )
    op.execute("CREATE INDEX ix_customer_merges_source ON customer_merges (source_customer_id, merged_at)")
    op.execute("CREATE INDEX ix_customer_merges_target ON customer_merges (target_customer_id, merged_at)")
    # A customer is merged away at most once at a time (an unmerge frees it for another merge).
    op.execute(
        "CREATE UNIQUE INDEX uq_customer_merges_standing_source ON customer_merges (source_customer_id) "
        "WHERE unmerged_at IS NULL"
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS customer_merges")
    op.execute("DROP INDEX IF EXISTS ix_customers_merged_into")
    op.execute("ALTER TABLE customers DROP CONSTRAINT IF EXISTS ck_customers_not_merged_into_itself")
    op.execute("ALTER TABLE customers DROP COLUMN IF EXISTS erased_at")
    op.execute("ALTER TABLE customers DROP COLUMN IF EXISTS merged_into")
