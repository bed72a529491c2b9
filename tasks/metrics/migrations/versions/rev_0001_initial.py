"""Files and stage attempts.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tasks.metrics.models import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "transcription_files",
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("file_name", sa.String(1000), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("audio_duration", sa.Float(), nullable=True),
        sa.Column("language", sa.String(16), nullable=True),
        sa.Column("speakers", sa.Integer(), nullable=True),
        sa.Column("model", sa.String(250), nullable=True),
        sa.Column("device", sa.String(32), nullable=True),
        sa.Column("compute_type", sa.String(32), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("options_key", sa.String(250), nullable=True),
        sa.Column("outputs", sa.JSON(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_transcription_files")),
    )
    op.create_index(op.f("ix_transcription_files_sha256"), "transcription_files", ["sha256"])
    op.create_index(op.f("ix_transcription_files_updated_at"), "transcription_files", ["updated_at"])

    op.create_table(
        "transcription_stage_attempts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("stage", sa.String(64), nullable=False),
        sa.Column("try_number", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("start", UTCDateTime(), nullable=False),
        sa.Column("end", UTCDateTime(), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.Column("audio_seconds", sa.Float(), nullable=True),
        sa.Column("rtf", sa.Float(), nullable=True),
        sa.Column("chunk_s", sa.Float(), nullable=True),
        sa.Column("batch_size", sa.Integer(), nullable=True),
        sa.Column("oom_shrunk", sa.Boolean(), nullable=False),
        sa.Column("oom_retries", sa.Integer(), nullable=False),
        sa.Column("cpu_fallback", sa.Boolean(), nullable=False),
        sa.Column("peak_rss_mb", sa.Float(), nullable=True),
        sa.Column("peak_gpu_mb", sa.Float(), nullable=True),
        sa.Column("device", sa.String(32), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transcription_stage_attempts")),
        sa.UniqueConstraint("run_id", "stage", "try_number", name="uq_transcription_stage_attempts_key"),
    )
    op.create_index(op.f("ix_transcription_stage_attempts_run_id"), "transcription_stage_attempts", ["run_id"])
    op.create_index("ix_transcription_stage_attempts_start", "transcription_stage_attempts", ["start"])


def downgrade() -> None:
    op.drop_table("transcription_stage_attempts")
    op.drop_table("transcription_files")
