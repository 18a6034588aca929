"""The knowledge-base vector column follows EMBEDDING_DIM: a database migrated with another dimension
(the earlier default, WordLlama's 256) is resized, its vectors cleared for the next ingest to fill;
and vectors are stored inline.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-02

The vectors cannot be converted (another model, another space), so they are set to NULL and every
chunk's content hash is cleared: `crm-fte up` and `crm-fte kb ingest` re-embed the bundled and
operator articles, and re-embed any other chunk left without a vector (the reviewed answers of
issue 17) from its stored text. Until then full-text search still finds every chunk.

Inline storage (`SET STORAGE PLAIN`): a 512-dim vector (2 KB) is past PostgreSQL's TOAST threshold,
and the planner does not cost out-of-line values, so at 20k chunks it chose a sequential scan that
detoasts every vector (hybrid search p95 83 ms) over the HNSW index (11 ms). Stored inline, the
scan is costed for what it reads (`python bench/kb_search.py --sizes 1000 20000`).
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
    if _declared_dimension() != dim:
        op.execute("DROP INDEX IF EXISTS ix_knowledge_base_embedding_hnsw")
        op.execute("UPDATE knowledge_base SET embedding = NULL, content_hash = ''")
        op.execute(f"ALTER TABLE knowledge_base ALTER COLUMN embedding TYPE vector({int(dim)})")
        op.execute(
            "CREATE INDEX ix_knowledge_base_embedding_hnsw ON knowledge_base USING hnsw (embedding vector_cosine_ops)"
        )
    # After any change of type, which resets the column to the type's storage.
    op.execute("ALTER TABLE knowledge_base ALTER COLUMN embedding SET STORAGE PLAIN")


def downgrade() -> None:
    # The column keeps the dimension the settings gave, as revision 0001 created it.
    op.execute("ALTER TABLE knowledge_base ALTER COLUMN embedding SET STORAGE EXTERNAL")
