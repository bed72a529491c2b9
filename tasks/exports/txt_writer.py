"""TXT: readable paragraphs, ``[hh:mm:ss] Speaker: text``, one per speaker turn."""

from __future__ import annotations

from ..result import Transcript
from .base import ExportOptions, Writer
from .timefmt import clock


def paragraphs(transcript: Transcript, options: ExportOptions | None = None) -> list[tuple[float, str | None, str]]:
    """Consecutive segments of one speaker joined: (start, speaker, text). Labels with the same display name
    are one person (merged)."""
    options = options or ExportOptions()
    out: list[tuple[float, str | None, str]] = []
    for seg in transcript.segments:
        if out and options.speaker(out[-1][1]) == options.speaker(seg.speaker):
            start, speaker, text = out[-1]
            out[-1] = (start, speaker, f"{text} {seg.text}".strip())
        else:
            out.append((seg.start, seg.speaker, seg.text))
    return out


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
