"""Knowledge-base chunks are article sections: their heading path, a re-weighted full-text vector.

Each chunk records the headings it sits under (``heading_path``, outermost first, without the
article title) and its own heading (``section``). The full-text vector weighs the title (A) and the
headings (B) above the body (D), so a word in a section's heading outranks the same word in passing.
A one-row ``knowledge_base_version`` counter, bumped by a statement trigger on every write to the
table, tells each process when its in-memory BM25 index (kb/lexical.py) is stale.
The internal policy articles (escalation rules, brand voice) leave the customer-searchable index:
they now live in ``kb/policies`` and feed the prompt and the guardrails instead.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Ids under which earlier releases ingested the bundled policy articles.
_POLICY_ARTICLES = ("escalation-rules", "brand-voice")

# Array subscripts (unlike array_to_string) are immutable, as a generated column requires;
# articles are written with at most `###` headings under the title, so two levels suffice.
_SECTION_VECTOR = """
    setweight(to_tsvector('english', coalesce(title, '')), 'A')
    || setweight(to_tsvector('english', coalesce(heading_path[1], '') || ' ' || coalesce(heading_path[2], '')), 'B')
    || setweight(to_tsvector('english', content), 'D')
"""
_OLD_VECTOR = """
    setweight(to_tsvector('english', coalesce(title, '')), 'A')
    || setweight(to_tsvector('english', content), 'B')
"""


def _in(words: Sequence[str]) -> str:
    return "(" + ", ".join(f"'{w}'" for w in words) + ")"


def upgrade() -> None:
    op.execute(f"DELETE FROM knowledge_base WHERE article_id IN {_in(_POLICY_ARTICLES)}")
    op.execute("ALTER TABLE knowledge_base ADD COLUMN section text")
    op.execute("ALTER TABLE knowledge_base ADD COLUMN heading_path text[] NOT NULL DEFAULT '{}'")
    # A generated column's expression cannot be altered: drop and re-add it (the GIN index goes with it).
    op.execute("ALTER TABLE knowledge_base DROP COLUMN search_vector")
    op.execute(
        f"ALTER TABLE knowledge_base ADD COLUMN search_vector tsvector GENERATED ALWAYS AS ({_SECTION_VECTOR}) STORED"
    )
    op.execute("CREATE INDEX ix_knowledge_base_search_vector ON knowledge_base USING gin (search_vector)")
    op.execute(
        "CREATE TABLE knowledge_base_version ("
        "singleton boolean PRIMARY KEY DEFAULT true CONSTRAINT ck_knowledge_base_version_singleton CHECK (singleton), "
        "version bigint NOT NULL)"
    )
    op.execute("INSERT INTO knowledge_base_version (version) VALUES (1)")
    op.execute(
        """
        CREATE FUNCTION knowledge_base_bump_version() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE knowledge_base_version SET version = version + 1;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER tr_knowledge_base_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON knowledge_base "
        "FOR EACH STATEMENT EXECUTE FUNCTION knowledge_base_bump_version()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER tr_knowledge_base_version ON knowledge_base")
    op.execute("DROP FUNCTION knowledge_base_bump_version()")
    op.execute("DROP TABLE knowledge_base_version")
    op.execute("ALTER TABLE knowledge_base DROP COLUMN search_vector")
    op.execute("ALTER TABLE knowledge_base DROP COLUMN heading_path")
    op.execute("ALTER TABLE knowledge_base DROP COLUMN section")
    op.execute(
        f"ALTER TABLE knowledge_base ADD COLUMN search_vector tsvector GENERATED ALWAYS AS ({_OLD_VECTOR}) STORED"
    )
    op.execute("CREATE INDEX ix_knowledge_base_search_vector ON knowledge_base USING gin (search_vector)")
