"""TXT: readable paragraphs, ``[hh:mm:ss] Speaker: text``, one per speaker turn (cut at long pauses)."""

from __future__ import annotations

from ..result import Transcript
from .base import ExportOptions, Writer
from .common import paragraphs as document_paragraphs
from .timefmt import clock


def paragraphs(transcript: Transcript, options: ExportOptions | None = None) -> list[tuple[float, str | None, str]]:
    """(start, speaker, text): the documents' paragraphs (consecutive segments of one speaker, a new one after a
    long pause or every minute or so). Labels with the same display name are one person (merged)."""
    return [(p.start, p.label, p.text) for p in document_paragraphs(transcript, options or ExportOptions())]


class TxtWriter(Writer):
    key = "txt"
    description = "plain text, one paragraph per speaker turn"

    def render(self, transcript: Transcript, options: ExportOptions) -> dict[str, bytes]:
        lines = [
            f"[{clock(start)}] {options.speaker(speaker)}: {text}" for start, speaker, text in paragraphs(transcript,
                                                                                                 options)
        ]
        body = "\n\n".join(lines) + "\n" if lines else "(no speech detected)\n"
        return {".txt": body.encode("utf-8")}
