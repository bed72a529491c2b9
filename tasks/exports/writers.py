"""The table of export formats, and writing them."""

from __future__ import annotations

import logging
from pathlib import Path

from ..result import Transcript
from .base import ExportError, ExportOptions, ExportResult, Writer
from .csv_writer import CsvWriter
from .docx_writer import DocxWriter
from .json_writer import JsonWriter
from .markdown_writer import MarkdownWriter
from .pdf_writer import PdfWriter
from .rttm_writer import RttmWriter
from .subtitles import SrtWriter, VttWriter
from .txt_writer import TxtWriter

log = logging.getLogger(__name__)

WRITERS: dict[str, type[Writer]] = {
    "txt": TxtWriter,
    "json": JsonWriter,
    "csv": CsvWriter,
    "srt": SrtWriter,
    "vtt": VttWriter,
    "pdf": PdfWriter,
    "docx": DocxWriter,
    "md": MarkdownWriter,
    "rttm": RttmWriter,
}
"""Format name -> writer class, in the order of ``tasks.settings.ALL_FORMATS``."""


def get_writer(key: str) -> Writer:
    """A writer for the format ``key``; ValueError naming the known formats if there is none."""
    try:
        return WRITERS[key]()
    except KeyError:
        raise ValueError(f"unknown export format {key!r}; available: {' '.join(sorted(WRITERS))}") from None


def available() -> list[str]:
    """The format names, sorted."""
    return sorted(WRITERS)


def write_format(transcript: Transcript, out_dir: Path, stem: str, key: str,
                 options: ExportOptions | None = None) -> list[Path]:
    """Write one format; raises :class:`ExportError` naming the format and the cause (one DAG task per format)."""
    try:
        return get_writer(key).write(transcript, Path(out_dir), stem, options or ExportOptions())
    except Exception as exc:
        raise ExportError(key, f"{type(exc).__name__}: {exc}") from exc


def write_formats(transcript: Transcript, out_dir: Path, stem: str, keys: list[str] | tuple[str, ...],
                  options: ExportOptions | None = None) -> list[ExportResult]:
    """Write several formats; one failing format never stops the others."""
    results = []
    for key in keys:
        try:
            results.append(ExportResult(key, write_format(transcript, out_dir, stem, key, options)))
        except Exception as exc:
            reason = exc.reason if isinstance(exc, ExportError) else f"{type(exc).__name__}: {exc}"
            log.error("%s export failed: %s", key, reason)
            results.append(ExportResult(key, error=reason))
    return results
