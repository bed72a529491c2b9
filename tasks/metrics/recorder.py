"""Measure one stage in-process and record it: wall time, peak process RSS, peak CUDA memory, outcome."""

from __future__ import annotations

import logging
import resource
import sys
import threading
import time
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from .store import MetricsStore, stage_fields_from_attempts

log = logging.getLogger(__name__)
_MB = 1024 * 1024


class StageRecorder:
    """``with StageRecorder(store, run_id, "transcribe", try_number, audio_seconds=d) as rec: ...``

    Writes a ``running`` row on entry and the finished row on exit, also when the block raises
    (status ``failed``, error ``"TypeName: message"``; the exception propagates). Peak RSS is exact when
    the process peak grows inside the block (``ru_maxrss``), else the maximum of a background sampler;
    peak GPU memory is torch's ``max_memory_allocated`` when torch has initialised CUDA (CTranslate2 has
    its own allocator: pass ``peak_gpu_mb`` through :meth:`update` for it). Database errors are logged,
    never raised, unless ``strict``: metrics must not fail a transcription.
    """

    def __init__(
        self,
        store: MetricsStore,
        run_id: str,
        stage: str,
        try_number: int = 1,
        *,
        audio_seconds: float | None = None,
        strict: bool = False,
        sample_interval: float = 0.05,
        started_at: datetime | None = None,
        **fields: Any,
    ) -> None:
        self.store, self.run_id, self.stage, self.try_number = store, run_id, stage, try_number
        self.started_at = started_at  # e.g. the task process's start: the row then covers imports and loading
        self.strict = strict
        self.fields: dict[str, Any] = {"audio_seconds": audio_seconds, **fields}
        self.sample_interval = sample_interval
        self.start: datetime | None = None
        self.end: datetime | None = None
        self.seconds: float | None = None
        self.peak_rss_mb: float | None = None
        self.peak_gpu_mb: float | None = None
        self._stop = threading.Event()
        self._sampled_rss = 0
        self._thread: threading.Thread | None = None

    def update(self, **fields: Any) -> None:
        """Set record_stage fields known only inside the block (chunk_s, batch_size, device, detail …)."""
        self.fields.update(fields)

    def add_attempts(self, attempts: Any) -> None:
        """Take chunk length, batch size, device, OOM retries and CPU fallback from pipeline attempts."""
        self.fields.update(stage_fields_from_attempts(attempts, self.stage))

    # -- context manager -----------------------------------------------------------------------------
    def __enter__(self) -> StageRecorder:
        now = datetime.now(UTC)
        self.start = self.started_at.astimezone(UTC) if self.started_at and self.started_at <= now else now
        self._t0 = time.perf_counter() - (now - self.start).total_seconds()
        self._maxrss0 = _ru_maxrss()
        _reset_cuda_peak()
        self._thread = threading.Thread(target=self._sample, name=f"metrics-{self.stage}", daemon=True)
        self._thread.start()
        self._write(status="running")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.seconds = time.perf_counter() - self._t0
        self.end = datetime.now(UTC)
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        maxrss = _ru_maxrss()
        rss = maxrss if maxrss > self._maxrss0 else max(self._sampled_rss, _current_rss())
        self.peak_rss_mb = round(rss / _MB, 1)
        gpu = _cuda_peak()
        given = self.fields.pop("peak_gpu_mb", None)
        self.peak_gpu_mb = max((v for v in (gpu, given) if v is not None), default=None)
        error = None if exc is None else f"{type(exc).__name__}: {exc}"
        self._write(status="failed" if exc is not None else "success", end=self.end, seconds=self.seconds,
                    error=error)

    def _write(self, **kwargs: Any) -> None:
        fields = dict(self.fields)
        fields.setdefault("error", None)
        fields.update(kwargs)
        if self.peak_rss_mb is not None:
            fields["peak_rss_mb"] = self.peak_rss_mb
        if self.peak_gpu_mb is not None:
            fields["peak_gpu_mb"] = self.peak_gpu_mb
        try:
            self.store.record_stage(self.run_id, self.stage, self.try_number, start=self.start, **fields)
        except Exception:
            if self.strict:
                raise
            log.warning("metrics: could not record stage %s of %s", self.stage, self.run_id, exc_info=True)

    def _sample(self) -> None:
        while True:
            self._sampled_rss = max(self._sampled_rss, _current_rss())
            if self._stop.wait(self.sample_interval):
                return


def _ru_maxrss() -> int:
    """Peak RSS of this process so far, in bytes (Linux reports KiB)."""
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value if sys.platform == "darwin" else value * 1024


def _current_rss() -> int:
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except Exception:  # pragma: no cover - psutil missing or process gone
        return 0


def _torch_cuda() -> Any | None:
    """torch.cuda when torch is already imported and has initialised CUDA (never imports torch)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        cuda = torch.cuda
        return cuda if cuda.is_available() and cuda.is_initialized() else None
    except Exception:  # pragma: no cover
        return None


def _reset_cuda_peak() -> None:
    cuda = _torch_cuda()
    for index in range(cuda.device_count() if cuda is not None else 0):
        cuda.reset_peak_memory_stats(index)


def _cuda_peak() -> float | None:
    cuda = _torch_cuda()
    if cuda is None:
        return None
    peak = max((cuda.max_memory_allocated(i) for i in range(cuda.device_count())), default=0)
    return round(peak / _MB, 1)
