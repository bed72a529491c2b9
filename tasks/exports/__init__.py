"""Export writers, one class per format, in an explicit table keyed by format name (``writers.WRITERS``).

``write_formats(transcript, out_dir, stem, ["txt", "json"])`` writes ``out_dir/<stem>.<key>`` atomically
(mode 0640) and reports, per format, the files written or the exact reason it failed. Formats:
``txt json csv srt vtt pdf docx md rttm`` (CSV also writes ``<stem>.words.csv``). Heavy libraries
(WeasyPrint, python-docx) are imported only when their format is written.
"""

from .base import ExportError, ExportOptions, ExportResult, SubtitleOptions, Writer, load_speaker_names
from .writers import available, get_writer, write_format, write_formats

__all__ = [
    "ExportError", "ExportOptions", "ExportResult", "SubtitleOptions", "Writer", "available", "get_writer",
    "load_speaker_names", "write_format", "write_formats",
]
