"""TXT: readable paragraphs, ``[hh:mm:ss] Speaker: text``, one per speaker turn."""

from __future__ import annotations

from ..result import Transcript
from .base import ExportOptions, Writer
from .timefmt import clock


def paragraphs(transcript: Transcript) -> list[tuple[float, str | None, str]]:
    """Consecutive segments of one speaker joined: (start, speaker, text)."""
    out: list[tuple[float, str | None, str]] = []
    for seg in transcript.segments:
        if out and out[-1][1] == seg.speaker:
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
            f"[{clock(start)}] {options.speaker(speaker)}: {text}" for start, speaker, text in paragraphs(transcript)
        ]
        body = "\n\n".join(lines) + "\n" if lines else "(no speech detected)\n"
        return {".txt": body.encode("utf-8")}
