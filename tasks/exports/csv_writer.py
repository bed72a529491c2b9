"""CSV: one row per segment (``<stem>.csv``) and one row per word (``<stem>.words.csv``).

Times are seconds with millisecond precision; UTF-8, optionally with a byte-order mark for spreadsheet programs.
Text cells that a spreadsheet would evaluate as a formula (starting with ``= + - @``, tab or carriage return)
get a leading apostrophe (the OWASP "CSV injection" defence), unless ``ExportOptions.csv_formula_guard`` is off.
"""

from __future__ import annotations

import csv
import io

from ..result import Transcript
from .base import ExportOptions, Writer
from .common import segment_words
from .timefmt import decimal_seconds

SEGMENT_COLUMNS = ("start", "end", "speaker", "text")
WORD_COLUMNS = ("start", "end", "speaker", "word", "probability")


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(text: str) -> str:
    """``text`` with an apostrophe in front when a spreadsheet would read it as a formula."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _table(header: tuple[str, ...], rows: list[tuple[object, ...]], bom: bool) -> bytes:
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8-sig" if bom else "utf-8")


class CsvWriter(Writer):
    key = "csv"
    description = "segments and words as CSV tables"

    def render(self, transcript: Transcript, options: ExportOptions) -> dict[str, bytes]:
        cell = spreadsheet_safe if options.csv_formula_guard else str
        t = decimal_seconds
        segments = [(t(s.start), t(s.end), cell(options.speaker(s.speaker)), cell(s.text.strip()))
                    for s in transcript.segments]
        words: list[tuple[object, ...]] = []
        for seg in transcript.segments:
            if seg.words:
                words += [(t(w.start), t(w.end), cell(options.speaker(w.speaker or seg.speaker)),
                           cell(w.text.strip()), f"{w.probability:.4f}") for w in seg.words if w.text.strip()]
            else:
                words += [(t(a), t(b), cell(options.speaker(seg.speaker)), cell(text.strip()), "")
                          for a, b, text in segment_words(seg)]
        return {
            ".csv": _table(SEGMENT_COLUMNS, segments, options.csv_bom),
            ".words.csv": _table(WORD_COLUMNS, words, options.csv_bom),
        }
