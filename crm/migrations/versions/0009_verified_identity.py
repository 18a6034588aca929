"""Verified identifiers and claims; confirmation links that turn a claim into a verified identifier.

An identifier is *verified* when a channel proved it (an email that reached the support mailbox
from that address, a Twilio-signed WhatsApp message from that number, or a confirmation link sent
to it and opened): `verified_at` and `verified_via` say when and how. Anything else (an address or
number typed into the web form) is a *claim*: it is kept on the customer who made it and never
finds a customer. So one identifier has at most one verified owner (a partial unique index), while
several customers may claim it; a customer lists an identifier once.

Backfill: a row first seen on the channel that proves it (an email on `email`, a phone on
`whatsapp`), or a phone whose own WhatsApp conversation (keyed by the number) the customer has,
becomes verified; everything else stays a claim. Where two rows of one value would qualify, the
oldest wins (the old unique constraint allowed only one row per value, so this is defensive).

`identity_confirmations` holds one row per confirmation request (`request_key`: the run of the
IdentityConfirmationWorkflow that sends it): the sha256 of the link's random token (the token itself
is only in the message sent), the claim it confirms, when its send was attempted and recorded, when
it expires and when it was used.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The proofs as of this migration (core.vocabulary.IDENTIFIER_PROOFS later; never imported here).
_PROOFS = ("gmail", "whatsapp", "confirmation_link")


def _in(words: Sequence[str]) -> str:
    return "(" + ", ".join(f"'{w}'" for w in words) + ")"


def upgrade() -> None:
    op.execute("ALTER TABLE customer_identifiers ADD COLUMN verified_at timestamptz")
    op.execute("ALTER TABLE customer_identifiers ADD COLUMN verified_via text")
    op.execute(
        "ALTER TABLE customer_identifiers ADD CONSTRAINT ck_customer_identifiers_verified_via "
        f"CHECK (verified_via IS NULL OR verified_via IN {_in(_PROOFS)})"
    )
    op.execute(
        "ALTER TABLE customer_identifiers ADD CONSTRAINT ck_customer_identifiers_verified_pair "
        "CHECK ((verified_at IS NULL) = (verified_via IS NULL))"
    )
    op.execute(
        """
        WITH proven AS (
            SELECT DISTINCT ON (i.identifier_type, i.identifier_value) i.id,
                   CASE i.identifier_type WHEN 'email' THEN 'gmail' ELSE 'whatsapp' END AS via
            FROM customer_identifiers i
            WHERE (i.identifier_type = 'email' AND i.channel = 'email')
               OR (i.identifier_type = 'phone' AND i.channel = 'whatsapp')
               OR (i.identifier_type = 'phone' AND EXISTS (
                    SELECT 1 FROM conversations c
                    WHERE c.customer_id = i.customer_id AND c.channel = 'whatsapp'
                      AND c.conversation_key = i.identifier_value))
            ORDER BY i.identifier_type, i.identifier_value, i.created_at, i.id
        )
        UPDATE customer_identifiers i SET verified_at = i.created_at, verified_via = proven.via
        FROM proven WHERE proven.id = i.id
        """
    )
    op.execute("ALTER TABLE customer_identifiers DROP CONSTRAINT uq_customer_identifiers_type_value")
    op.execute(
        "ALTER TABLE customer_identifiers ADD CONSTRAINT uq_customer_identifiers_customer_id_type_value "
        "UNIQUE (customer_id, identifier_type, identifier_value)"
    )
    # One verified owner per identifier; claims of the same value by other customers are allowed.
    op.execute(
        "CREATE UNIQUE INDEX uq_customer_identifiers_verified ON customer_identifiers "
        "(identifier_type, identifier_value) WHERE verified_at IS NOT NULL"
    )
    # Which customers claim a value (a confirmation, a human looking for duplicates).
    op.execute(
        "CREATE INDEX ix_customer_identifiers_type_value ON customer_identifiers (identifier_type, identifier_value)"
    )
    op.execute(
        """
        CREATE TABLE identity_confirmations (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            customer_id uuid NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
            identifier_type text NOT NULL,
            identifier_value text NOT NULL,
            token_hash text NOT NULL,
            request_key text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            expires_at timestamptz NOT NULL,
            send_attempted_at timestamptz,
            sent_at timestamptz,
            delivery_status text,
            provider_message_id text,
            confirmed_at timestamptz,
            CONSTRAINT ck_identity_confirmations_type CHECK (identifier_type IN ('email', 'phone')),
            CONSTRAINT uq_identity_confirmations_token_hash UNIQUE (token_hash),
            CONSTRAINT uq_identity_confirmations_request_key UNIQUE (request_key)
        )
        """
    )
    op.execute("CREATE INDEX ix_identity_confirmations_customer_id ON identity_confirmations (customer_id)")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS identity_confirmations")
    op.execute("DROP INDEX IF EXISTS ix_customer_identifiers_type_value")
    op.execute("DROP INDEX IF EXISTS uq_customer_identifiers_verified")
    op.execute(
        "ALTER TABLE customer_identifiers DROP CONSTRAINT IF EXISTS uq_customer_identifiers_customer_id_type_value"
    )
    # Back to one row per value: keep the verified row (else the oldest) of each value.
    op.execute(
        """
        DELETE FROM customer_identifiers i USING (
            SELECT id, row_number() OVER (
                PARTITION BY identifier_type, identifier_value
                ORDER BY verified_at IS NULL, created_at, id) AS n
            FROM customer_identifiers) ranked
        WHERE ranked.id = i.id AND ranked.n > 1
        """
    )
    op.execute(
        "ALTER TABLE customer_identifiers ADD CONSTRAINT uq_customer_identifiers_type_value "
        "UNIQUE (identifier_type, identifier_value)"
    )
    op.execute("ALTER TABLE customer_identifiers DROP CONSTRAINT IF EXISTS ck_customer_identifiers_verified_pair")
    op.execute("ALTER TABLE customer_identifiers DROP CONSTRAINT IF EXISTS ck_customer_identifiers_verified_via")
    op.execute("ALTER TABLE customer_identifiers DROP COLUMN IF EXISTS verified_via")
    op.execute("ALTER TABLE customer_identifiers DROP COLUMN IF EXISTS verified_at")
