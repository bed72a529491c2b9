"""The full-text index of final transcripts, in the metrics database (one code path through SQLAlchemy).

One row per run in ``transcription_texts`` (file, date, duration, language, speaker names, the words). The
words are searched with SQLite FTS5 (the ``transcription_texts_fts`` table, written in the same transaction)
or PostgreSQL full-text search (``to_tsvector('simple', text)``, GIN-indexed); only :func:`_matches` differs
by dialect. The pipeline indexes a run in its metrics stage (:func:`index_transcript`); ``securetranscribe
index rebuild`` indexes every run folder again (:func:`rebuild`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, and_, column, delete, func, insert, literal_column, select, table, update
from sqlalchemy.engine import Connection

from ..metrics.models import FileRun, TranscriptText, utcnow
from ..metrics.store import MetricsStore
from ..settings import Settings

log = logging.getLogger(__name__)

FTS = table("transcription_texts_fts", column("run_id"), column("text"))
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Listed:
    """One file of the list: the metrics row, and its transcript's index row when it has one."""

    run_id: str
    file_name: str | None
    stem: str | None
    status: str
    created_at: datetime
    processed_at: datetime | None
    duration: float | None
    language: str | None
    speakers: list[str]
    speaker_count: int | None
    error: str | None
    indexed: bool

    def to_api(self) -> dict[str, Any]:
        """The REST API's object."""
        return {"run_id": self.run_id, "file": self.file_name, "stem": self.stem, "status": self.status,
                "processed_at": (self.processed_at or self.created_at).isoformat(), "duration": self.duration,
                "language": self.language, "speakers": self.speakers, "searchable": self.indexed}


def query_words(q: str | None) -> list[str]:
    """The words of a search (letters and digits; punctuation and operators are not syntax)."""
    return _WORD.findall(q or "")[:32]


def _matches(conn: Connection, words: list[str]) -> ColumnElement[bool]:
    """Rows whose transcript holds every word (SQLite FTS5 / PostgreSQL full-text search)."""
    t = TranscriptText.__table__
    if conn.dialect.name == "sqlite":
        expr = " ".join('"' + w.replace('"', '""') + '"' for w in words)
        return t.c.run_id.in_(select(FTS.c.run_id).where(FTS.c.text.op("MATCH")(expr)))
    if conn.dialect.name == "postgresql":
        simple = literal_column("'simple'::regconfig")
        return func.to_tsvector(simple, t.c.text).op("@@")(func.plainto_tsquery(simple, " ".join(words)))
    return and_(*[t.c.text.ilike(f"%{w}%") for w in words])  # other databases: no index, plain matching


class TranscriptIndex:
    """Reads and writes the index in a :class:`MetricsStore`'s database (migrated to 0002 or later)."""

    def __init__(self, store: MetricsStore) -> None:
        self.store = store
        self.engine = store.engine

    def add(self, run_id: str, text: str, *, sha256: str | None = None, file_name: str | None = None,
            stem: str | None = None, duration: float | None = None, language: str | None = None,
            speakers: Iterable[str] = (), processed_at: datetime | None = None) -> None:
        """Insert or replace the row of ``run_id`` (and its full-text entry) in one transaction."""
        t = TranscriptText.__table__
        row = {"run_id": run_id, "sha256": sha256, "file_name": file_name, "stem": stem,
               "processed_at": processed_at or utcnow(), "duration": duration, "language": language,
               "speakers": list(speakers), "text": text}
        with self.engine.begin() as conn:
            conn.execute(delete(t).where(t.c.run_id == run_id))
            conn.execute(insert(t).values(**row))
            if conn.dialect.name == "sqlite":
                conn.execute(delete(FTS).where(FTS.c.run_id == run_id))
                conn.execute(insert(FTS).values(run_id=run_id, text=text))

    def set_speakers(self, run_id: str, speakers: Iterable[str]) -> None:
        t = TranscriptText.__table__
        with self.engine.begin() as conn:
            conn.execute(update(t).where(t.c.run_id == run_id).values(speakers=list(speakers)))

    def remove(self, run_ids: Iterable[str]) -> int:
        ids = list(run_ids)
        t = TranscriptText.__table__
        with self.engine.begin() as conn:
            if conn.dialect.name == "sqlite":
                conn.execute(delete(FTS).where(FTS.c.run_id.in_(ids)))
            return conn.execute(delete(t).where(t.c.run_id.in_(ids))).rowcount or 0

    def clear(self) -> None:
        with self.engine.begin() as conn:
            if conn.dialect.name == "sqlite":
                conn.execute(delete(FTS))
            conn.execute(delete(TranscriptText.__table__))

    def run_ids(self) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.execute(select(TranscriptText.run_id)).scalars())

    def search(self, q: str | None = None, *, limit: int = 50, offset: int = 0) -> tuple[list[Listed], int]:
        """Files newest first, and how many there are: every file of the metrics database without ``q``;
        with ``q``, only files whose transcript holds every word of it."""
        f, t = FileRun.__table__, TranscriptText.__table__
        words = query_words(q)
        joined = f.outerjoin(t, t.c.run_id == f.c.run_id)
        with self.engine.connect() as conn:
            where = [] if q is None or not q.strip() else [_matches(conn, words)] if words else [f.c.run_id.is_(None)]
            total = conn.execute(select(func.count()).select_from(joined).where(*where)).scalar_one()
            rows = conn.execute(
                select(f.c.run_id, f.c.file_name, f.c.status, f.c.created_at, f.c.audio_duration, f.c.language,
                       f.c.speakers.label("speaker_count"), f.c.error, t.c.stem, t.c.processed_at,
                       t.c.duration, t.c.language.label("t_language"), t.c.speakers, t.c.run_id.label("t_run"))
                .select_from(joined).where(*where)
                .order_by(func.coalesce(t.c.processed_at, f.c.created_at).desc(), f.c.run_id)
                .limit(limit).offset(offset)
            ).mappings().all()
        return [Listed(
            run_id=r["run_id"], file_name=r["file_name"],
            stem=r["stem"] or (Path(r["file_name"]).stem if r["file_name"] else None), status=r["status"],
            created_at=r["created_at"], processed_at=r["processed_at"],
            duration=r["duration"] if r["duration"] is not None else r["audio_duration"],
            language=r["t_language"] or r["language"], speakers=list(r["speakers"] or []),
            speaker_count=r["speaker_count"], error=r["error"], indexed=r["t_run"] is not None,
        ) for r in rows], total

    def text_of(self, run_id: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(select(TranscriptText.text).where(TranscriptText.run_id == run_id)).scalar()


def transcript_text(data: Mapping[str, Any]) -> str:
    """The words of a transcript JSON, one segment per line."""
    return "\n".join(str(s.get("text", "")).strip() for s in data.get("segments", []) if str(s.get("text", "")).strip())


def display_speakers(data: Mapping[str, Any], names: Mapping[str, str] | None = None) -> list[str]:
    """The speakers' display names, merged labels once, in order of first speech."""
    out: list[str] = []
    for label in data.get("speakers", []):
        name = " ".join(str((names or {}).get(label) or "").split()) or label
        if name not in out:
            out.append(name)
    return out


def index_transcript(store: MetricsStore, run_id: str, transcript_path: str | Path, *, file_name: str | None = None,
                     stem: str | None = None, sha256: str | None = None,
                     speaker_names: Mapping[str, str] | None = None, processed_at: datetime | None = None) -> None:
    """(Re-)index one run's final transcript (called by the metrics stage and by :func:`rebuild`)."""
    import json

    data = json.loads(Path(transcript_path).read_text(encoding="utf-8"))
    TranscriptIndex(store).add(
        run_id, transcript_text(data), sha256=sha256 or (data.get("source") or {}).get("sha256"),
        file_name=file_name, stem=stem, duration=data.get("duration"), language=data.get("language"),
        speakers=display_speakers(data, speaker_names), processed_at=processed_at)


def rebuild(store: MetricsStore, settings: Settings) -> int:
    """Index every run folder of ``settings.work`` that holds a final transcript again, from scratch; returns
    how many."""
    from ..workspace import Workspace
    from .speakers import effective_names

    work = settings.work

    index = TranscriptIndex(store)
    index.clear()
    count = 0
    for folder in sorted(work.iterdir()) if work.is_dir() else []:
        ws = Workspace(folder)
        if folder.is_symlink() or not ws.transcript_file.is_file() or not ws.run_file.is_file():
            continue
        try:
            info = ws.run_info()
            names = effective_names(ws, settings)
            when = datetime.fromtimestamp(ws.transcript_file.stat().st_mtime).astimezone()
            index_transcript(store, ws.run_id, ws.transcript_file, file_name=info.name, stem=info.stem,
                             sha256=info.sha256, speaker_names=names, processed_at=when)
            count += 1
        except (OSError, ValueError, TypeError) as exc:
            log.warning("not indexed: %s: %s", folder.name, exc)
    return count


__all__ = ["Listed", "TranscriptIndex", "display_speakers", "index_transcript", "query_words", "rebuild",
           "transcript_text"]
