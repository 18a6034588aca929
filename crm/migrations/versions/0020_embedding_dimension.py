"""The knowledge-base vector column follows EMBEDDING_DIM: a database migrated with another dimension
(the earlier default, WordLlama's 256) is resized, its vectors cleared for the next ingest to fill.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-02

The vectors cannot be converted (another model, another space), so they are set to NULL and every
chunk's content hash is cleared: `crm-fte up` and `crm-fte kb ingest` re-embed the bundled and
operator articles, and re-embed any other chunk left without a vector (the reviewed answers of
issue 17) from its stored text. Until then full-text search still finds every chunk.
"""

from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

from core.settings import get_settings

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _declared_dimension() -> int:
    typmod = (
        op.get_bind()
        .execute(
            text(
                "SELECT atttypmod FROM pg_attribute WHERE attrelid = 'knowledge_base'::regclass "
                "AND attname = 'embedding' AND NOT attisdropped"
            )
        )
        .scalar_one()
    )
    return int(typmod)


def upgrade() -> None:
    dim = get_settings().embedding_dim
    if _declared_dimension() == dim:
        return
    op.execute("DROP INDEX IF EXISTS ix_knowledge_base_embedding_hnsw")
    op.execute("UPDATE knowledge_base SET embedding = NULL, content_hash = ''")
    op.execute(f"ALTER TABLE knowledge_base ALTER COLUMN embedding TYPE vector({int(dim)})")
    op.execute(
        "CREATE INDEX ix_knowledge_base_embedding_hnsw ON knowledge_base USING hnsw (embedding vector_cosine_ops)"
    )


def downgrade() -> None:
    # Nothing to undo: the column keeps the dimension the settings gave, as revision 0001 created it.
    pass
