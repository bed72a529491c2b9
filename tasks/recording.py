"""Observing stages: a timing file per stage, the failure reason, and rows in the metrics database.

:class:`StageHooks` is what every stage reports to (``with hooks.stage(ws, "plan"): …``). The DAGs use
:meth:`StageHooks.for_settings` (timings + metrics database); the CLI uses ``StageHooks()`` (timings only).
Metrics never fail a transcription: an unreachable database is logged and skipped.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from .files import atomic_write_json
from .settings import Settings
from .workspace import Workspace

log = logging.getLogger(__name__)

ProgressFn = Callable[[float, float, int], None]


@functools.lru_cache(maxsize=4)
def _metrics_store(url: str | None) -> Any:
    """The metrics database of this process (migrated once), or None when off or unreachable."""
    if not url:
        return None
    try:
        from .metrics import MetricsStore

        store = MetricsStore(url)
        store.upgrade()
        return store
    except Exception:  # metrics must never fail a transcription
        log.warning("metrics database %s unavailable; not recording", url.split("@")[-1], exc_info=True)
        return None


def metrics_store(settings: Settings | None = None) -> Any:
    return _metrics_store((settings or Settings.from_env()).metrics_database_url)


class _NoRecorder:
    def update(self, **fields: Any) -> None:
        pass

    def add_attempts(self, attempts: Any) -> None:
        pass


class StageHooks:
    """Where stages report: timing files always; metrics rows when ``store`` is set; chunk progress."""

    def __init__(self, store: Any = None, progress: ProgressFn | None = None) -> None:
        self.store = store
        self.progress = progress

    @classmethod
    def for_settings(cls, settings: Settings, progress: ProgressFn | None = None) -> StageHooks:
        return cls(metrics_store(settings), progress)

    @contextmanager
    def stage(self, ws: Workspace, name: str, try_number: int | None = None, started_at: Any = None) -> Iterator[Any]:
        """Time a stage (``timings/<name>.json`` and a metrics row) and keep the reason when it fails.

        ``started_at``: when the task process started, so the recorded time includes its start-up,
        imports and model loading — what a stage really costs under Airflow.
        """
        t0 = time.perf_counter()
        recorder: Any = nullcontext(_NoRecorder())
        if self.store is not None:
            from .metrics import StageRecorder

            if (try_number or 1) > 1:
                try:
                    self.store.mark_interrupted(ws.run_id, name, try_number)
                except Exception:  # metrics must never fail a transcription
                    log.warning("metrics: could not close earlier tries of %s", name, exc_info=True)
            audio_s = ws.read(ws.info_file)["duration"] if ws.info_file.is_file() else None
            recorder = StageRecorder(self.store, ws.run_id, name, try_number or 1, audio_seconds=audio_s,
                                     started_at=started_at)
        with recorder as rec:
            try:
                yield rec
            except BaseException as exc:
                ws.record_failure(name, exc, try_number)
                raise
            finally:
                atomic_write_json(ws.timing_file(name), {"stage": name, "seconds": round(time.perf_counter() - t0, 3),
                                                         "try_number": try_number})

    def file(self, ws: Workspace, status: str, **fields: Any) -> None:
        """Insert or update this run's row in the metrics database (never fails the caller)."""
        if self.store is None:
            return
        try:
            self.store.record_file(ws.run_id, status=status, **fields)
        except Exception:  # metrics must never fail a transcription
            log.warning("metrics: could not record file row of %s", ws.run_id, exc_info=True)


def stage_timings(ws: Workspace) -> dict[str, float]:
    """Seconds per stage recorded so far in the run's work folder, in the order they ran."""
    folder = ws.timings_dir
    if not folder.is_dir():
        return {}
    files = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
    return {p.stem: ws.read(p)["seconds"] for p in files}
