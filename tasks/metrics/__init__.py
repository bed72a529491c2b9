"""Transcription metrics: a row per processed file and per stage attempt, report and UI queries.

>>> store = MetricsStore(settings.metrics_database_url); store.upgrade()
>>> store.record_file(run_id, status="running", file_name="a.flac", sha256=digest)
>>> with StageRecorder(store, run_id, "transcribe", try_number, audio_seconds=duration) as rec:
...     transcript = ...; rec.add_attempts(transcript.attempts)
"""

from .models import FILE_STATUSES, STAGE_STATUSES
from .recorder import StageRecorder
from .store import FileRecord, MetricsStore, StageRecord, stage_fields_from_attempts

__all__ = [
    "FILE_STATUSES",
    "STAGE_STATUSES",
    "FileRecord",
    "MetricsStore",
    "StageRecord",
    "StageRecorder",
    "stage_fields_from_attempts",
]
