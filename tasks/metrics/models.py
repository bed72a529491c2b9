"""SQLAlchemy 2 models of the metrics database: one row per processed file, one per stage attempt.

Tables carry a ``transcription_`` prefix and Alembic keeps its own version table
(:data:`VERSION_TABLE`), so the metrics may share a PostgreSQL database with Airflow's metadata.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, Index, Integer, MetaData, String, Text, UniqueConstraint
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

VERSION_TABLE = "transcription_metrics_version"
SEARCH_INDEXES = frozenset({"ix_transcription_texts_tsv", "transcription_texts_fts"})
"""Full-text search objects made by migration 0002 for one dialect only (PostgreSQL GIN index, SQLite FTS5
table and its shadow tables): not in the models, ignored when comparing the schema with them."""
FILE_STATUSES = ("running", "success", "failed", "skipped", "quarantined")
STAGE_STATUSES = ("running", "success", "failed")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive UTC; naive input is local time)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class FileRun(Base):
    """One processed file: one pipeline run (run id), upserted by every task of that run."""

    __tablename__ = "transcription_files"

    run_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    file_name: Mapped[str | None] = mapped_column(String(1000))
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    audio_duration: Mapped[float | None] = mapped_column(Float, doc="seconds of audio")
    language: Mapped[str | None] = mapped_column(String(16))
    speakers: Mapped[int | None] = mapped_column(Integer, doc="speakers found")
    model: Mapped[str | None] = mapped_column(String(250))
    device: Mapped[str | None] = mapped_column(String(32))
    compute_type: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="running")
    error: Mapped[str | None] = mapped_column(Text)
    options_key: Mapped[str | None] = mapped_column(String(250))
    outputs: Mapped[list[str] | None] = mapped_column(JSON, doc="export files, relative to the outbox")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class StageAttempt(Base):
    """One try (Airflow try number) of one stage of one run; a retry of the same try updates it."""

    __tablename__ = "transcription_stage_attempts"
    __table_args__ = (
        UniqueConstraint("run_id", "stage", "try_number", name="uq_transcription_stage_attempts_key"),
        Index("ix_transcription_stage_attempts_start", "start"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(250), index=True)
    stage: Mapped[str] = mapped_column(String(64))
    try_number: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="success")
    start: Mapped[datetime] = mapped_column(UTCDateTime)
    end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    seconds: Mapped[float | None] = mapped_column(Float, doc="wall seconds")
    audio_seconds: Mapped[float | None] = mapped_column(Float)
    rtf: Mapped[float | None] = mapped_column(Float, doc="real-time factor: audio seconds per wall second")
    chunk_s: Mapped[float | None] = mapped_column(Float, doc="chunk length used (the last, after shrinking)")
    batch_size: Mapped[int | None] = mapped_column(Integer, doc="batch size used (the last, after shrinking)")
    oom_shrunk: Mapped[bool] = mapped_column(Boolean, default=False)
    oom_retries: Mapped[int] = mapped_column(Integer, default=0, doc="GPU out-of-memory retries inside the try")
    cpu_fallback: Mapped[bool] = mapped_column(Boolean, default=False)
    peak_rss_mb: Mapped[float | None] = mapped_column(Float)
    peak_gpu_mb: Mapped[float | None] = mapped_column(Float)
    device: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TranscriptText(Base):
    """The searchable text of one run's final transcript (the Transcripts view; full-text index beside it:
    an FTS5 table on SQLite, a GIN expression index on PostgreSQL, see migration 0002)."""

    __tablename__ = "transcription_texts"

    run_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    file_name: Mapped[str | None] = mapped_column(String(1000))
    stem: Mapped[str | None] = mapped_column(String(1000))
    processed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    duration: Mapped[float | None] = mapped_column(Float, doc="seconds of audio")
    language: Mapped[str | None] = mapped_column(String(16))
    speakers: Mapped[list[str] | None] = mapped_column(JSON, doc="display names, in order of first speech")
    text: Mapped[str] = mapped_column(Text, default="")
