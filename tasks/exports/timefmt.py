"""Every way the exports print a time or a duration, each defined once. Negative times print as zero."""

from __future__ import annotations


def clock(seconds: float) -> str:
    """``hh:mm:ss``, floored (TXT, PDF, DOCX and Markdown paragraph times, document duration)."""
    total = max(0, int(seconds))
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


def timestamp(seconds: float, sep: str = ".") -> str:
    """``hh:mm:ss.mmm`` rounded to the millisecond (WebVTT); ``sep=","`` gives SRT's ``hh:mm:ss,mmm``."""
    ms = max(0, round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def decimal_seconds(seconds: float) -> str:
    """Seconds with millisecond precision, ``83.250`` (CSV and RTTM columns)."""
    return f"{max(0.0, seconds):.3f}"


def span(seconds: float) -> str:
    """A human duration: ``1 h 02 min 03 s``, ``3 min 07 s``, ``12.5 s``."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    total = round(seconds)
    h, m, s = total // 3600, total % 3600 // 60, total % 60
    return f"{h} h {m:02d} min {s:02d} s" if h else f"{m} min {s:02d} s"
