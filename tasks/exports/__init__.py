"""Export writers, one class per format, behind a registry keyed by format name.

``write_formats(transcript, out_dir, stem, ["txt", "json"])`` writes ``out_dir/<stem>.<key>`` atomically
(mode 0640) and reports, per format, the files written or the exact reason it failed.
"""

from . import json_writer, txt_writer  # noqa: F401 - registers the writers
from .base import ExportOptions, ExportResult, Writer, get_writer, register, write_format, write_formats

__all__ = [
    "ExportOptions", "ExportResult", "Writer", "get_writer", "register", "write_format", "write_formats",
]
