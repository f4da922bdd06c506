"""PostgreSQL chains a transaction's ledger entries at COMMIT (``ledger_pending``).

A write transaction hands its row writes, its entries (unchained) and its
notifications to ``countersign_write`` in one statement, in autocommit when
it read nothing first; the entries become one ``ledger_pending`` row. A
deferred constraint trigger fires inside COMMIT: it locks the ledger head,
hashes and inserts the entries exactly as ``storage.ledger.entry_hash`` does,
moves the head and deletes the row. The
head lock is then held from inside COMMIT to its end, never across a round
trip to the client.

SQLite gets the (unused) table only, so both schemas match the models.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The hashed text is entry_hash's: keys sorted, no spaces, strings quoted as
# json.dumps(ensure_ascii=False) quotes them (to_json escapes the same characters:
# quote, backslash, \b \f \n \r \t and other controls as lowercase \u00XX).
_CHAIN = """
CREATE FUNCTION countersign_ledger_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    head_seq bigint;
    head_hash text;
    e jsonb;
    digest text;
BEGIN
    SELECT seq, hash INTO head_seq, head_hash FROM ledger_head WHERE id = 1 FOR UPDATE;
    FOR e IN
        SELECT value FROM jsonb_array_elements(NEW.entries) WITH ORDINALITY ORDER BY ordinality
    LOOP
        head_seq := head_seq + 1;
        digest := encode(sha256(convert_to(
            '{"actor":' || COALESCE(to_json(e->>'actor')::text, 'null')
            || ',"at":' || to_json(e->>'at')::text
            || ',"data":' || (e->>'data')
            || ',"event":' || to_json(e->>'event')::text
            || ',"prev_hash":' || to_json(head_hash)::text
            || ',"request_id":' || COALESCE(to_json(e->>'request_id')::text, 'null')
            || ',"seq":' || head_seq::text || '}',
            'UTF8')), 'hex');
        INSERT INTO ledger (seq, at, event, request_id, actor, data, prev_hash, hash)
        VALUES (head_seq, e->>'at', e->>'event', e->>'request_id', e->>'actor', e->>'data',
                head_hash, digest);
        head_hash := digest;
    END LOOP;
    UPDATE ledger_head SET seq = head_seq, hash = head_hash WHERE id = 1;
    DELETE FROM ledger_pending WHERE id = NEW.id;
    RETURN NULL;
END $$
"""


# One round trip for what a transaction leaves to its end: its row writes (each
# {"table", "row", "id"}: an INSERT, or an UPDATE of row "id" when "id" is set;
# the row's JSON is read with the table's own column types), its ledger entries
# and its notifications. Sent alone in autocommit, it is the whole transaction.
_WRITE = """
CREATE FUNCTION countersign_write(ops jsonb, entries jsonb, channel text, ids text[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    op jsonb;
    cols text;
BEGIN
    FOR op IN SELECT value FROM jsonb_array_elements(ops) WITH ORDINALITY ORDER BY ordinality
    LOOP
        SELECT string_agg(quote_ident(k), ', ') INTO cols FROM jsonb_object_keys(op->'row') AS k;
        IF op->>'id' IS NULL THEN
            EXECUTE format(
                'INSERT INTO %1$I (%2$s) SELECT %2$s FROM jsonb_populate_record(NULL::%1$I, $1)',
                op->>'table', cols
            ) USING op->'row';
        ELSE
            EXECUTE format(
                'UPDATE %1$I SET (%2$s) = (SELECT %2$s FROM jsonb_populate_record(NULL::%1$I, $1))'
                ' WHERE id = $2',
                op->>'table', cols
            ) USING op->'row', op->>'id';
        END IF;
    END LOOP;
    IF jsonb_array_length(entries) > 0 THEN
        INSERT INTO ledger_pending (entries) VALUES (entries);
    END IF;
    PERFORM pg_notify(channel, id) FROM unnest(ids) AS id;
END $$
"""


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "ledger_pending",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("entries", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        # Its rows never outlive their transaction: nothing to log or to replicate.
        prefixes=["UNLOGGED"] if postgres else [],
    )
    if postgres:
        op.execute(_CHAIN)
        op.execute(_WRITE)
        op.execute(
            "CREATE CONSTRAINT TRIGGER ledger_pending_chain AFTER INSERT ON ledger_pending "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION countersign_ledger_chain()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS ledger_pending_chain ON ledger_pending")
        op.execute("DROP FUNCTION IF EXISTS countersign_ledger_chain()")
        op.execute("DROP FUNCTION IF EXISTS countersign_write(jsonb, jsonb, text, text[])")
    op.drop_table("ledger_pending")
