"""Observing stages: a timing file per stage, the failure reason, and rows in the metrics database.

:class:`StageHooks` is what every stage reports to (``with hooks.stage(ws, "plan"): …``). The DAGs use
:meth:`StageHooks.for_settings` (timings + metrics database); the CLI uses ``StageHooks()`` (timings only).
Metrics never fail a transcription: an unreachable database is logged and skipped.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from .files import atomic_write_json
from .settings import Settings
from .workspace import Workspace

log = logging.getLogger(__name__)

ProgressFn = Callable[[float, float, int], None]
PROGRESS_EVERY_S = 5.0
"""How often a long stage logs where it is (the task log in Airflow, stderr for the CLI's logging)."""


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


class ProgressLog:
    """Where a long stage is, in one line: in ``ws.progress_file(stage)`` (what a UI shows) and in the log
    every ``every_s`` seconds while the stage runs (``with ProgressLog(ws, "diarize") as p: p.set("…")``).

    Only counts, names of steps and times: never transcript text.
    """

    def __init__(self, ws: Workspace, stage: str, every_s: float | None = None,
                 logger: logging.Logger | None = None) -> None:
        self.ws, self.stage = ws, stage
        self.every_s = PROGRESS_EVERY_S if every_s is None else every_s
        self.log = logger or log
        self.line = ""
        self._t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def set(self, line: str) -> None:
        """The stage's progress now (written at once; logged at the next tick)."""
        self.line = " ".join(line.split())
        try:
            self.ws.progress_file(self.stage).write_text(self.line + "\n", encoding="utf-8")
        except OSError:  # progress must never fail the stage
            pass

    def emit(self) -> None:
        self.log.info("%s: %s (%.0f s elapsed)", self.stage, self.line or "starting", time.monotonic() - self._t0)

    def _tick(self) -> None:
        while not self._stop.wait(self.every_s):
            self.emit()

    def __enter__(self) -> ProgressLog:
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._tick, name=f"{self.stage}-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.emit()


def chunk_line(done_chunks: int, total_chunks: int, done_s: float, total_s: float) -> str:
    """``chunk 3/7 · 480/1680 s`` (the chunk being transcribed), or ``7/7 chunks · 1680/1680 s`` at the end."""
    where = (f"{total_chunks}/{total_chunks} chunks" if done_chunks >= total_chunks
             else f"chunk {done_chunks + 1}/{total_chunks}")
    return f"{where} · {done_s:,.0f}/{total_s:,.0f} s"


def step_line(step: str, completed: int | None = None, total: int | None = None) -> str:
    """``embeddings 12/30 (40 %)`` or just the step's name when it has no count."""
    if completed is None or not total:
        return step
    return f"{step} {min(completed, total)}/{total} ({100 * min(completed, total) / total:.0f} %)"
