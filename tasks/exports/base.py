"""The writer interface, the per-run export options, and what an export reports."""

from __future__ import annotations

import errno
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..files import atomic_write_bytes
from ..result import DEFAULT_SPEAKER, Transcript


@dataclass(frozen=True)
class SubtitleOptions:
    """Limits for SRT and WebVTT cues (broadcast-style defaults)."""

    max_chars: int = 42
    """Characters per line (East Asian wide characters count as two)."""
    max_lines: int = 2
    max_duration: float = 7.0
    """Longest cue in seconds; longer speech is split at word boundaries."""
    min_duration: float = 1.0
    """Shortest cue in seconds, reached only where the next cue leaves room."""
    max_gap: float = 1.5
    """A pause longer than this between two words starts a new cue."""


@dataclass(frozen=True)
class ExportOptions:
    """Per-run export choices."""

    speaker_names: dict[str, str] = field(default_factory=dict)
    """Display names, e.g. {"SPEAKER_00": "Diane"}; applied by every format."""
    csv_bom: bool = False
    """Write CSV with a UTF-8 byte-order mark (for spreadsheet programs)."""
    csv_formula_guard: bool = True
    """Prefix CSV text cells starting with ``= + - @`` (tab, CR) with an apostrophe so spreadsheets show them
    as text instead of running them as formulas; off gives the raw text."""
    title: str = "Transcript"
    """Document title (PDF, DOCX, Markdown)."""
    date: str | None = None
    """Date shown in documents; default: the time of export."""
    subtitles: SubtitleOptions = field(default_factory=SubtitleOptions)
    include_dir: Path | None = None
    """Folder of the PDF template (``templates/``) and stylesheet (``static/``); None: the project's ``include/``."""
    fault_disk_full: bool = False
    """Fault injection for tests: every export write fails with ``OSError(ENOSPC)``, as on a full disk."""

    def speaker(self, label: str | None) -> str:
        """The display name of a speaker label (whitespace collapsed; the label when no name is set)."""
        label = label or DEFAULT_SPEAKER
        name = " ".join(str(self.speaker_names.get(label) or "").split())
        return name or label

    @classmethod
    def from_conf(cls, conf: Mapping[str, Any] | None) -> ExportOptions:
        """Options from a DAG-run conf / JSON object: ``speaker_names`` (a mapping or a mapping file), ``csv_bom``,
        ``csv_formula_guard``, ``title``, ``date``, ``subtitles`` (a mapping of :class:`SubtitleOptions` fields)."""
        conf = dict(conf or {})
        names = conf.get("speaker_names") or {}
        if isinstance(names, (str, Path)):
            names = load_speaker_names(names)
        if not isinstance(names, Mapping):
            raise ValueError(f"speaker_names must map labels to names, got {type(names).__name__}")
        kwargs: dict[str, Any] = {"speaker_names": {str(k): str(v) for k, v in names.items()}}
        for key in ("csv_bom", "csv_formula_guard"):
            if key in conf:
                kwargs[key] = bool(conf[key])
        for key in ("title", "date"):
            if conf.get(key):
                kwargs[key] = str(conf[key])
        if conf.get("subtitles"):
            kwargs["subtitles"] = SubtitleOptions(**conf["subtitles"])
        return cls(**kwargs)


def load_speaker_names(path: str | Path) -> dict[str, str]:
    """A speaker-name mapping file: a JSON object, or ``SPEAKER_00=Diane`` lines (``#`` comments)."""
    text = Path(path).read_text(encoding="utf-8-sig")
    if text.lstrip().startswith("{"):
        data = json.loads(text)
        return {str(k): str(v) for k, v in data.items()}
    names: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        label, sep, name = line.partition("=")
        if not sep or not label.strip():
            raise ValueError(f"{path}:{number}: expected SPEAKER_LABEL=Name, got {line!r}")
        names[label.strip()] = name.strip()
    return names


@dataclass
class ExportResult:
    """What one format produced: files, or the reason it failed."""

    format: str
    files: list[Path] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class ExportError(RuntimeError):
    """One format failed; the message names the format and the cause."""

    def __init__(self, format: str, reason: str):
        super().__init__(f"{format} export failed: {reason}")
        self.format = format
        self.reason = reason


class Writer(ABC):
    """One export format. Subclasses set ``key`` and implement :meth:`render`."""

    key: ClassVar[str]
    description: ClassVar[str] = ""

    @abstractmethod
    def render(self, transcript: Transcript, options: ExportOptions) -> dict[str, bytes]:
        """File suffix (e.g. ``.txt``, ``.words.csv``) -> content."""

    def write(self, transcript: Transcript, out_dir: Path, stem: str, options: ExportOptions) -> list[Path]:
        """Render, then write each file atomically as ``out_dir/<stem><suffix>``; returns the paths.
        With ``options.fault_disk_full``, fails with ENOSPC instead of writing."""
        rendered = self.render(transcript, options)
        if options.fault_disk_full:
            path = Path(out_dir) / f"{stem}{next(iter(rendered), '')}"
            raise OSError(errno.ENOSPC, "No space left on device (SECURETRANSCRIBE_FAULT_DISK_FULL)", str(path))
        return [atomic_write_bytes(Path(out_dir) / f"{stem}{suffix}", data) for suffix, data in rendered.items()]
