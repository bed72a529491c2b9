"""The writer interface and registry."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from ..files import atomic_write_bytes
from ..result import Transcript

log = logging.getLogger(__name__)

_REGISTRY: dict[str, type[Writer]] = {}


@dataclass(frozen=True)
class ExportOptions:
    """Per-run export choices."""

    speaker_names: dict[str, str] = field(default_factory=dict)
    """Display names, e.g. {"SPEAKER_00": "Diane"}; applied by every format."""
    csv_bom: bool = False
    """Write CSV with a UTF-8 byte-order mark (for spreadsheet programs)."""

    def speaker(self, label: str | None) -> str:
        label = label or "SPEAKER_00"
        return self.speaker_names.get(label, label)


@dataclass
class ExportResult:
    """What one format produced: files, or the reason it failed."""

    format: str
    files: list[Path] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Writer(ABC):
    """One export format. Subclasses set ``key`` and implement :meth:`render`."""

    key: ClassVar[str]
    description: ClassVar[str] = ""

    @abstractmethod
    def render(self, transcript: Transcript, options: ExportOptions) -> dict[str, bytes]:
        """File suffix (e.g. ``.txt``, ``.words.csv``) -> content."""

    def write(self, transcript: Transcript, out_dir: Path, stem: str, options: ExportOptions) -> list[Path]:
        rendered = self.render(transcript, options)
        return [atomic_write_bytes(Path(out_dir) / f"{stem}{suffix}", data) for suffix, data in rendered.items()]


def register(cls: type[Writer]) -> type[Writer]:
    """Class decorator: make a writer available under its ``key``."""
    _REGISTRY[cls.key] = cls
    return cls


def get_writer(key: str) -> Writer:
    try:
        return _REGISTRY[key]()
    except KeyError:
        raise ValueError(f"unknown export format {key!r}; available: {' '.join(sorted(_REGISTRY))}") from None


def available() -> list[str]:
    return sorted(_REGISTRY)


def write_format(transcript: Transcript, out_dir: Path, stem: str, key: str,
                 options: ExportOptions | None = None) -> list[Path]:
    """Write one format; raises on failure (the DAG maps one task per format)."""
    return get_writer(key).write(transcript, Path(out_dir), stem, options or ExportOptions())


def write_formats(transcript: Transcript, out_dir: Path, stem: str, keys: list[str] | tuple[str, ...],
                  options: ExportOptions | None = None) -> list[ExportResult]:
    """Write several formats; one failing format never stops the others."""
    results = []
    for key in keys:
        try:
            results.append(ExportResult(key, write_format(transcript, out_dir, stem, key, options)))
        except Exception as exc:
            log.error("export %s failed: %s: %s", key, type(exc).__name__, exc)
            results.append(ExportResult(key, error=f"{type(exc).__name__}: {exc}"))
    return results
