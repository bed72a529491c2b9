"""Recording API and shared queries of the metrics database (SQLite file by default, PostgreSQL in production).

Every write is an upsert: a file row is keyed by run id, a stage row by (run id, stage, try number),
so a retried or re-run task updates its own rows and never duplicates them.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Table, and_, create_engine, delete, event, func, or_, select, text, update
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.pool import StaticPool

from .models import FILE_STATUSES, STAGE_STATUSES, VERSION_TABLE, FileRun, StageAttempt, TranscriptText, utcnow

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_PG_LOCK_KEY = 0x53545F4D45545249  # "ST_METRI": advisory lock id for migrations

Timestamp = datetime | float
"""A datetime (naive means local time) or a Unix timestamp in seconds."""


@dataclass(frozen=True)
class StageRecord:
    """One stage attempt as read back from the database."""

    run_id: str
    stage: str
    try_number: int
    status: str
    start: datetime
    end: datetime | None
    seconds: float | None
    audio_seconds: float | None
    rtf: float | None
    chunk_s: float | None
    batch_size: int | None
    oom_shrunk: bool
    oom_retries: int
    cpu_fallback: bool
    peak_rss_mb: float | None
    peak_gpu_mb: float | None
    device: str | None
    error: str | None
    detail: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return _jsonable({f.name: getattr(self, f.name) for f in fields(self)})


@dataclass(frozen=True)
class FileRecord:
    """One processed file as read back, with its stage attempts in start order."""

    run_id: str
    file_name: str | None
    sha256: str | None
    audio_duration: float | None
    language: str | None
    speakers: int | None
    model: str | None
    device: str | None
    compute_type: str | None
    status: str
    error: str | None
    options_key: str | None
    outputs: list[str] | None
    created_at: datetime
    updated_at: datetime
    stages: list[StageRecord] = field(default_factory=list)

    @property
    def wall_seconds(self) -> float:
        """Sum of the stage seconds of the last try of each stage."""
        return sum(s.seconds or 0.0 for s in self.last_tries().values())

    def last_tries(self) -> dict[str, StageRecord]:
        """The highest try number of every stage, in order of first start."""
        out: dict[str, StageRecord] = {}
        for s in self.stages:
            if s.stage not in out or s.try_number > out[s.stage].try_number:
                out[s.stage] = s
        return out

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "stages"}
        data["stages"] = [s.to_dict() for s in self.stages]
        return _jsonable(data)


class MetricsStore:
    """The metrics database behind one SQLAlchemy URL.

    ``MetricsStore(url)``; ``MetricsStore()`` reads ``Settings.from_env().metrics_database_url``.
    Call :meth:`upgrade` once per process before writing (cheap when already at head).
    """

    def __init__(self, url: str | None = None, *, echo: bool = False) -> None:
        if url is None:
            from ..settings import Settings

            url = Settings.from_env().metrics_database_url
        self.url = normalise_url(url)
        self.engine: Engine = _create_engine(self.url, echo=echo)

    def __repr__(self) -> str:
        return f"MetricsStore({make_url(self.url).render_as_string(hide_password=True)!r})"

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> MetricsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema ------------------------------------------------------------------------------------
    def _alembic_config(self, connection: Connection | None = None):
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        if connection is not None:
            cfg.attributes["connection"] = connection
        return cfg

    def head_revision(self) -> str | None:
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(self._alembic_config()).get_current_head()

    def current_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()

    def upgrade(self, revision: str = "head") -> None:
        """Create or migrate the schema (Alembic). Safe to call from several processes at once:
        PostgreSQL serialises on an advisory lock, SQLite on a lock file beside the database."""
        from alembic import command

        if revision == "head" and self.current_revision() == self.head_revision():
            return
        with self._migration_lock(), self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
            command.upgrade(self._alembic_config(conn), revision)

    def downgrade(self, revision: str = "base") -> None:
        from alembic import command

        with self._migration_lock(), self.engine.begin() as conn:
            command.downgrade(self._alembic_config(conn), revision)

    @contextmanager
    def _migration_lock(self) -> Iterator[None]:
        db = make_url(self.url).database if self.engine.dialect.name == "sqlite" else None
        if not db or db == ":memory:" or db.startswith("file:"):
            yield
            return
        with open(f"{db}.migrate.lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- writes ------------------------------------------------------------------------------------
    def record_file(
        self,
        run_id: str,
        *,
        status: str,
        file_name: str | None = None,
        sha256: str | None = None,
        audio_duration: float | None = None,
        language: str | None = None,
        speakers: int | None = None,
        model: str | None = None,
        device: str | None = None,
        compute_type: str | None = None,
        error: str | None = None,
        options_key: str | None = None,
        outputs: Iterable[str | os.PathLike[str]] | None = None,
    ) -> None:
        """Insert or update the row of ``run_id``. Fields left None keep their stored value;
        ``status`` and ``error`` are always written (a successful retry clears the error)."""
        if status not in FILE_STATUSES:
            raise ValueError(f"file status {status!r} not in {FILE_STATUSES}")
        values: dict[str, Any] = {
            "file_name": file_name, "sha256": sha256, "audio_duration": audio_duration, "language": language,
            "speakers": speakers, "model": model, "device": device, "compute_type": compute_type,
            "options_key": options_key, "outputs": None if outputs is None else [str(p) for p in outputs],
        }
        values = {k: v for k, v in values.items() if v is not None}
        now = utcnow()
        values.update(status=status, error=_truncate(error), updated_at=now)
        self._upsert(FileRun.__table__, {"run_id": run_id, "created_at": now, **values}, ["run_id"], values)

    def record_stage(
        self,
        run_id: str,
        stage: str,
        try_number: int,
        *,
        start: Timestamp,
        end: Timestamp | None = None,
        seconds: float | None = None,
        status: str | None = None,
        audio_seconds: float | None = None,
        chunk_s: float | None = None,
        batch_size: int | None = None,
        oom_shrunk: bool = False,
        oom_retries: int = 0,
        cpu_fallback: bool = False,
        peak_rss_mb: float | None = None,
        peak_gpu_mb: float | None = None,
        device: str | None = None,
        error: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Insert or replace the row of (run_id, stage, try_number). ``seconds`` defaults to end - start,
        the real-time factor is audio_seconds / seconds; status defaults to success (running without end)."""
        start_dt = _as_datetime(start)
        end_dt = None if end is None else _as_datetime(end)
        if seconds is None and end_dt is not None:
            seconds = max(0.0, (end_dt - start_dt).total_seconds())
        status = status or ("success" if end_dt is not None else "running")
        if status not in STAGE_STATUSES:
            raise ValueError(f"stage status {status!r} not in {STAGE_STATUSES}")
        rtf = audio_seconds / seconds if audio_seconds is not None and seconds else None
        values = {
            "status": status, "start": start_dt, "end": end_dt, "seconds": seconds, "audio_seconds": audio_seconds,
            "rtf": rtf, "chunk_s": chunk_s, "batch_size": batch_size, "oom_shrunk": bool(oom_shrunk or oom_retries),
            "oom_retries": int(oom_retries), "cpu_fallback": bool(cpu_fallback), "peak_rss_mb": peak_rss_mb,
            "peak_gpu_mb": peak_gpu_mb, "device": device, "error": _truncate(error),
            "detail": None if detail is None else _jsonable(dict(detail)), "updated_at": utcnow(),
        }
        key = {"run_id": run_id, "stage": stage, "try_number": int(try_number)}
        self._upsert(StageAttempt.__table__, {**key, **values}, list(key), values)

    def _upsert(self, table: Table, row: dict[str, Any], keys: list[str], update: dict[str, Any]) -> None:
        dialect = self.engine.dialect.name
        with self.engine.begin() as conn:
            if dialect in ("postgresql", "sqlite"):
                if dialect == "postgresql":
                    from sqlalchemy.dialects.postgresql import insert
                else:
                    from sqlalchemy.dialects.sqlite import insert
                stmt = insert(table).values(**row)
                conn.execute(stmt.on_conflict_do_update(index_elements=keys, set_=update))
                return
            where = [table.c[k] == row[k] for k in keys]  # other backends: update, else insert
            if conn.execute(table.update().where(*where).values(**update)).rowcount == 0:
                conn.execute(table.insert().values(**row))

    def mark_interrupted(self, run_id: str, stage: str, before_try: int) -> int:
        """Earlier tries of a stage still "running" — their process died (killed worker, crash) — become
        "failed" with the reason, so no row claims to be running forever. Returns the rows changed."""
        now = utcnow()
        with self.engine.begin() as conn:
            result = conn.execute(
                update(StageAttempt)
                .where(StageAttempt.run_id == run_id, StageAttempt.stage == stage,
                       StageAttempt.try_number < before_try, StageAttempt.status == "running")
                .values(status="failed", error="interrupted: the task process ended before the stage finished",
                        updated_at=now)
            )
        return result.rowcount or 0

    def purge(self, sha256: str) -> int:
        """Delete every file row with this sha256, their stage rows and transcript texts; returns the number of
        files."""
        with self.engine.begin() as conn:
            runs = select(FileRun.run_id).where(FileRun.sha256 == sha256)
            texts = [r for (r,) in conn.execute(select(TranscriptText.run_id).where(or_(
                TranscriptText.sha256 == sha256, TranscriptText.run_id.in_(runs))))]
            if texts and conn.dialect.name == "sqlite":  # the full-text entries (see tasks/transcripts/index.py)
                conn.execute(text("DELETE FROM transcription_texts_fts WHERE run_id IN (SELECT value FROM "
                                  "json_each(:ids))"), {"ids": json.dumps(texts)})
            conn.execute(delete(TranscriptText).where(TranscriptText.run_id.in_(texts)))
            conn.execute(delete(StageAttempt).where(StageAttempt.run_id.in_(runs)))
            return conn.execute(delete(FileRun).where(FileRun.sha256 == sha256)).rowcount

    # -- queries -----------------------------------------------------------------------------------
    def file(self, run_id: str) -> FileRecord | None:
        """One run with its stages, or None."""
        found = self.files(run_ids=[run_id])
        return found[0] if found else None

    def files(
        self,
        *,
        since: datetime | None = None,
        limit: int | None = None,
        run_ids: Iterable[str] | None = None,
        status: str | None = None,
    ) -> list[FileRecord]:
        """Files (most recently written first) with their stage attempts; ``since``: files with a stage
        started since then (files without stages: written since then)."""
        query = select(*FileRun.__table__.c).order_by(FileRun.updated_at.desc(), FileRun.run_id)
        if since is not None:  # processed since: a stage started since, or (no stages) written since
            staged = select(StageAttempt.run_id)
            query = query.where(or_(
                FileRun.run_id.in_(staged.where(StageAttempt.start >= since)),
                and_(FileRun.updated_at >= since, FileRun.run_id.not_in(staged)),
            ))
        if run_ids is not None:
            query = query.where(FileRun.run_id.in_(list(run_ids)))
        if status is not None:
            query = query.where(FileRun.status == status)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
            ids = [r["run_id"] for r in rows]
            stages: dict[str, list[StageRecord]] = {i: [] for i in ids}
            if ids:
                for s in self._stage_rows(conn, select_run_ids=ids):
                    stages[s.run_id].append(s)
        return [FileRecord(**dict(r), stages=stages[r["run_id"]]) for r in rows]

    def recent_files(self, limit: int = 50) -> list[FileRecord]:
        return self.files(limit=limit)

    def stage_attempts(self, *, since: datetime | None = None, run_id: str | None = None) -> list[StageRecord]:
        """Stage attempts in start order."""
        with self.engine.connect() as conn:
            return self._stage_rows(conn, since=since, select_run_ids=None if run_id is None else [run_id])

    @staticmethod
    def _stage_rows(
        conn: Connection, *, since: datetime | None = None, select_run_ids: list[str] | None = None
    ) -> list[StageRecord]:
        t = StageAttempt.__table__
        query = select(*[c for c in t.c if c.name not in ("id", "updated_at")]).order_by(
            t.c.start, t.c.stage, t.c.try_number)
        if since is not None:
            query = query.where(t.c.start >= since)
        if select_run_ids is not None:
            query = query.where(t.c.run_id.in_(select_run_ids))
        return [StageRecord(**dict(r)) for r in conn.execute(query).mappings()]

    def counts(self) -> dict[str, int]:
        """Row counts of both tables (for tests and health checks)."""
        with self.engine.connect() as conn:
            return {
                "files": conn.execute(select(func.count()).select_from(FileRun)).scalar_one(),
                "stage_attempts": conn.execute(select(func.count()).select_from(StageAttempt)).scalar_one(),
            }




def stage_fields_from_attempts(attempts: Iterable[Any], stage: str | None = None) -> dict[str, Any]:
    """Keyword arguments for :meth:`MetricsStore.record_stage` from the pipeline's chunk attempts
    (``tasks.result.Attempt`` objects or their dicts): the last chunk length, batch size and device
    used, the number of out-of-memory retries and whether work fell back to CPU."""
    rows = [a if isinstance(a, Mapping) else vars(a) for a in attempts]
    rows = [a for a in rows if stage is None or a.get("stage") == stage]
    if not rows:
        return {}
    ooms = sum(1 for a in rows if a.get("outcome") == "oom")
    done = [a for a in rows if a.get("outcome") == "ok"] or rows
    last = done[-1]
    return {
        "chunk_s": last.get("chunk_s"), "batch_size": last.get("batch_size"), "device": last.get("device"),
        "oom_shrunk": ooms > 0, "oom_retries": ooms, "cpu_fallback": any(a.get("cpu_fallback") for a in rows),
    }


def normalise_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 (the driver installed); other URLs pass unchanged."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _create_engine(url: str, *, echo: bool) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, echo=echo, pool_pre_ping=True)
    db = parsed.database
    if not db or db == ":memory:":
        return create_engine(url, echo=echo, poolclass=StaticPool, connect_args={"check_same_thread": False})
    if not db.startswith("file:"):
        Path(db).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, echo=echo, connect_args={"timeout": 60})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:  # WAL: the UI reads while tasks write
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout = 60000")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.close()

    return engine


def _as_datetime(value: Timestamp) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.fromtimestamp(float(value), UTC)


def _truncate(text_: str | None, limit: int = 4000) -> str | None:
    return text_ if text_ is None or len(text_) <= limit else text_[: limit - 1] + "…"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    return str(value)
