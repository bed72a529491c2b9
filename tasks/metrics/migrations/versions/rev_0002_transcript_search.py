"""Transcript texts with a full-text index (the Transcripts view).

SQLite: an FTS5 table ``transcription_texts_fts`` (run_id, text) kept in step by the index's writes.
PostgreSQL: a GIN index on ``to_tsvector('simple', text)``.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tasks.metrics.models import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

FTS_TABLE = "transcription_texts_fts"
PG_INDEX = "ix_transcription_texts_tsv"


def upgrade() -> None:
    op.create_table(
        "transcription_texts",
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("file_name", sa.String(1000), nullable=True),
        sa.Column("stem", sa.String(1000), nullable=True),
        sa.Column("processed_at", UTCDateTime(), nullable=False),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.Column("language", sa.String(16), nullable=True),
        sa.Column("speakers", sa.JSON(), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_transcription_texts")),
    )
    op.create_index(op.f("ix_transcription_texts_sha256"), "transcription_texts", ["sha256"])
    op.create_index(op.f("ix_transcription_texts_processed_at"), "transcription_texts", ["processed_at"])
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute(f"CREATE VIRTUAL TABLE {FTS_TABLE} USING fts5(run_id UNINDEXED, text, "
                   "tokenize = 'unicode61 remove_diacritics 2')")
    elif dialect == "postgresql":
        op.execute(f"CREATE INDEX {PG_INDEX} ON transcription_texts USING gin (to_tsvector('simple'::regconfig, text))")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(f"DROP TABLE IF EXISTS {FTS_TABLE}")
    op.drop_table("transcription_texts")
