"""Export writers, one class per format, behind a registry keyed by format name.

``write_formats(transcript, out_dir, stem, ["txt", "json"])`` writes ``out_dir/<stem>.<key>`` atomically
(mode 0640) and reports, per format, the files written or the exact reason it failed. Formats:
``txt json csv srt vtt pdf docx md rttm`` (CSV also writes ``<stem>.words.csv``). Heavy libraries
(WeasyPrint, python-docx) are imported only when their format is written.
"""

from . import (  # noqa: F401 - registers the writers
    csv_writer,
    docx_writer,
    json_writer,
    markdown_writer,
    pdf_writer,
    rttm_writer,
    subtitles,
    txt_writer,
)
from .base import (
    ExportError,
    ExportOptions,
    ExportResult,
    SubtitleOptions,
    Writer,
    available,
    get_writer,
    load_speaker_names,
    register,
    write_format,
    write_formats,
)

__all__ = [
    "ExportError", "ExportOptions", "ExportResult", "SubtitleOptions", "Writer", "available", "get_writer",
    "load_speaker_names", "register", "write_format", "write_formats",
]
