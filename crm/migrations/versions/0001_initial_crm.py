"""The CRM's first schema: pgvector, the seed's eight tables, ticket numbers, triggers.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from alembic import op

from core.settings import get_settings

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _in(values: Sequence[str]) -> str:
    # Frozen here on purpose: a migration must not change when the application's enums do.
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


CHANNELS = _in(("email", "whatsapp", "web_form"))


def _execute_all(script: str) -> None:
    """asyncpg runs one statement per call; this script has no semicolons inside statements."""
    for statement in script.split(";\n"):
        if statement.strip():
            op.execute(statement)


def upgrade() -> None:
    dim = get_settings().embedding_dim
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")

    op.execute(
        """
        CREATE FUNCTION set_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            NEW.updated_at := now();
            RETURN NEW;
        END $$;
        """
    )
    # Sequence values are never reused (nextval is not rolled back), so ticket numbers are unique
    # and gap-tolerant. lpad alone would truncate past 9999, hence greatest().
    op.execute("CREATE SEQUENCE ticket_number_seq AS bigint START 1 NO CYCLE")
    op.execute(
        """
        CREATE FUNCTION next_ticket_number() RETURNS text LANGUAGE sql VOLATILE AS $$
            SELECT 'TKT-' || lpad(n::text, greatest(4, length(n::text)), '0')
            FROM (SELECT nextval('ticket_number_seq') AS n) AS s
        $$;
        """
    )

    _execute_all(
        f"""
        CREATE TABLE customers (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            email text,
            phone text,
            name text,
            company text,
            plan text,
            attributes jsonb NOT NULL DEFAULT '{{}}',
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT ck_customers_plan CHECK (plan IS NULL OR plan IN {
            _in(("free", "starter", "pro", "enterprise"))
        }),
            CONSTRAINT ck_customers_email_lower CHECK (email IS NULL OR email = lower(email)),
            CONSTRAINT ck_customers_phone_e164 CHECK (phone IS NULL OR phone ~ '^\\+[1-9][0-9]{{6,14}}$')
        );
        CREATE INDEX ix_customers_email ON customers (email);
        CREATE INDEX ix_customers_phone ON customers (phone);

        CREATE TABLE customer_identifiers (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            customer_id uuid NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
            identifier_type text NOT NULL,
            identifier_value text NOT NULL,
            channel text,
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT ck_customer_identifiers_type CHECK (identifier_type IN {_in(("email", "phone"))}),
            CONSTRAINT ck_customer_identifiers_channel CHECK (channel IS NULL OR channel IN {CHANNELS}),
            CONSTRAINT uq_customer_identifiers_type_value UNIQUE (identifier_type, identifier_value)
        );
        CREATE INDEX ix_customer_identifiers_customer_id ON customer_identifiers (customer_id);

        CREATE TABLE conversations (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            customer_id uuid NOT NULL REFERENCES customers (id) ON DELETE RESTRICT,
            channel text NOT NULL,
            conversation_key text NOT NULL,
            workflow_id text NOT NULL,
            workflow_run_id text,
            status text NOT NULL DEFAULT 'active',
            sentiment_score double precision,
            subject text,
            started_at timestamptz NOT NULL DEFAULT now(),
            ended_at timestamptz,
            updated_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT ck_conversations_channel CHECK (channel IN {CHANNELS}),
            CONSTRAINT ck_conversations_status CHECK (status IN {_in(("active", "escalated", "resolved", "closed"))}),
            CONSTRAINT ck_conversations_sentiment CHECK (sentiment_score IS NULL OR sentiment_score BETWEEN -1 AND 1)
        );
        -- One open conversation per key (a WhatsApp number, a Gmail thread); a closed one may be
        -- followed by a new one on the same key.
        CREATE UNIQUE INDEX uq_conversations_open_key ON conversations (conversation_key)
            WHERE status <> 'closed';
        CREATE INDEX ix_conversations_customer_id ON conversations (customer_id, started_at DESC);
        CREATE INDEX ix_conversations_workflow_id ON conversations (workflow_id);

        CREATE TABLE messages (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            conversation_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
            channel text NOT NULL,
            direction text NOT NULL,
            role text NOT NULL,
            content text NOT NULL,
            external_message_id text,
            idempotency_key text,
            provider_message_id text,
            delivery_status text NOT NULL DEFAULT 'received',
            attachments jsonb NOT NULL DEFAULT '[]',
            attributes jsonb NOT NULL DEFAULT '{{}}',
            tokens_used integer,
            latency_ms integer,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT ck_messages_channel CHECK (channel IN {CHANNELS}),
            CONSTRAINT ck_messages_direction CHECK (direction IN ('inbound', 'outbound')),
            CONSTRAINT ck_messages_role CHECK (role IN {_in(("customer", "agent", "human_agent", "system"))}),
            CONSTRAINT ck_messages_delivery_status CHECK (delivery_status IN {
            _in(
                (
                    "received",
                    "pending",
                    "queued",
                    "sent",
                    "delivered",
                    "read",
                    "failed",
                    "undelivered",
                    "not_configured",
                )
            )
        }),
            CONSTRAINT ck_messages_inbound_has_external_id
                CHECK (direction <> 'inbound' OR external_message_id IS NOT NULL)
        );
        -- The inbound dedupe key: a provider redelivery can never become a second row.
        CREATE UNIQUE INDEX uq_messages_inbound_dedupe ON messages (channel, external_message_id)
            WHERE direction = 'inbound';
        -- An outbound message is recorded under our own key before it is sent.
        CREATE UNIQUE INDEX uq_messages_idempotency_key ON messages (idempotency_key)
            WHERE idempotency_key IS NOT NULL;
        CREATE INDEX ix_messages_conversation ON messages (conversation_id, created_at);
        CREATE INDEX ix_messages_provider_message_id ON messages (provider_message_id)
            WHERE provider_message_id IS NOT NULL;

        CREATE TABLE tickets (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            ticket_number text NOT NULL DEFAULT next_ticket_number(),
            conversation_id uuid REFERENCES conversations (id) ON DELETE SET NULL,
            customer_id uuid NOT NULL REFERENCES customers (id) ON DELETE RESTRICT,
            subject text,
            category text NOT NULL DEFAULT 'other',
            priority text NOT NULL DEFAULT 'medium',
            status text NOT NULL DEFAULT 'open',
            source_channel text NOT NULL,
            resolution_notes text,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            resolved_at timestamptz,
            CONSTRAINT uq_tickets_ticket_number UNIQUE (ticket_number),
            CONSTRAINT uq_tickets_conversation_id UNIQUE (conversation_id),
            CONSTRAINT ck_tickets_category CHECK (category IN {
            _in(("how_to", "bug", "billing", "account", "feature_request", "other"))
        }),
            CONSTRAINT ck_tickets_priority CHECK (priority IN {_in(("low", "medium", "high", "urgent"))}),
            CONSTRAINT ck_tickets_status CHECK (status IN {
            _in(("open", "in_progress", "escalated", "resolved", "closed"))
        }),
            CONSTRAINT ck_tickets_source_channel CHECK (source_channel IN {CHANNELS})
        );
        CREATE INDEX ix_tickets_customer_id ON tickets (customer_id, created_at DESC);
        CREATE INDEX ix_tickets_status ON tickets (status, created_at);

        CREATE TABLE knowledge_base (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            article_id text NOT NULL,
            title text NOT NULL,
            category text NOT NULL,
            chunk_index integer NOT NULL,
            content text NOT NULL,
            content_hash text NOT NULL,
            embedding vector({dim}),
            embedding_model text,
            search_vector tsvector GENERATED ALWAYS AS (
                setweight(to_tsvector('english', coalesce(title, '')), 'A')
                || setweight(to_tsvector('english', content), 'B')
            ) STORED,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT uq_knowledge_base_article_chunk UNIQUE (article_id, chunk_index),
            CONSTRAINT ck_knowledge_base_chunk_index CHECK (chunk_index >= 0)
        );
        CREATE INDEX ix_knowledge_base_embedding_hnsw ON knowledge_base
            USING hnsw (embedding vector_cosine_ops);
        CREATE INDEX ix_knowledge_base_search_vector ON knowledge_base USING gin (search_vector);
        CREATE INDEX ix_knowledge_base_content_hash ON knowledge_base (content_hash);

        CREATE TABLE channel_configs (
            channel text PRIMARY KEY,
            enabled boolean NOT NULL DEFAULT true,
            tone text NOT NULL,
            max_response_length integer NOT NULL,
            greeting text,
            signature text,
            settings jsonb NOT NULL DEFAULT '{{}}',
            updated_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT ck_channel_configs_channel CHECK (channel IN {CHANNELS}),
            CONSTRAINT ck_channel_configs_tone CHECK (tone IN ('formal', 'concise', 'semi_formal')),
            CONSTRAINT ck_channel_configs_max_length CHECK (max_response_length > 0)
        );

        CREATE TABLE agent_metrics (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            metric_type text NOT NULL,
            channel text,
            value double precision NOT NULL,
            conversation_id uuid REFERENCES conversations (id) ON DELETE SET NULL,
            dimensions jsonb NOT NULL DEFAULT '{{}}',
            recorded_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT ck_agent_metrics_channel CHECK (channel IS NULL OR channel IN {CHANNELS})
        );
        CREATE INDEX ix_agent_metrics_type_channel_time ON agent_metrics (metric_type, channel, recorded_at);
        """
    )
    for table in ("customers", "conversations", "messages", "tickets", "knowledge_base", "channel_configs"):
        op.execute(
            f"CREATE TRIGGER trg_{table}_updated_at BEFORE UPDATE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION set_updated_at()"
        )

    op.execute(
        """
        INSERT INTO channel_configs (channel, tone, max_response_length, greeting, signature, settings) VALUES
            ('email', 'formal', 4000, 'Dear {name},', 'Best regards,\nThe TechCorp Support Team',
             '{"include_ticket_reference": true}'),
            ('whatsapp', 'concise', 1600, 'Hi {name}!', NULL, '{"split_long_messages": true}'),
            ('web_form', 'semi_formal', 3000, 'Hi {name},', 'TechCorp Support', '{}')
        """
    )


def downgrade() -> None:
    for table in (
        "agent_metrics",
        "channel_configs",
        "knowledge_base",
        "tickets",
        "messages",
        "conversations",
        "customer_identifiers",
        "customers",
    ):
        op.execute(f"DROP TABLE IF EXISTS {table}")
    op.execute("DROP FUNCTION IF EXISTS next_ticket_number()")
    op.execute("DROP SEQUENCE IF EXISTS ticket_number_seq")
    op.execute("DROP FUNCTION IF EXISTS set_updated_at()")
    # The vector extension stays: other schemas in the same database may use it.
