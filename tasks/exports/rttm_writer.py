"""RTTM: the diarization (speaker turns, overlaps kept) for evaluation tools such as pyannote.metrics or dscore.

``SPEAKER <file-id> 1 <onset> <duration> <NA> <NA> <speaker> <NA> <NA>``; the file id is the source file's stem
and speaker names have their spaces replaced with underscores (RTTM fields are space-separated).
"""

from __future__ import annotations

from pathlib import PurePath

from ..result import DEFAULT_SPEAKER, Transcript
from .base import ExportOptions, Writer
from .timefmt import decimal_seconds


def rttm_token(text: str, default: str) -> str:
    """A field safe for RTTM: no whitespace."""
    return "_".join(text.split()) or default


class RttmWriter(Writer):
    key = "rttm"
    description = "speaker turns (diarization) in NIST RTTM"

    def render(self, transcript: Transcript, options: ExportOptions) -> dict[str, bytes]:
        uri = rttm_token(PurePath(str(transcript.source.get("file") or "audio")).stem, "audio")
        turns = [(t.start, t.end, t.speaker) for t in transcript.turns]
        if not turns:  # no diarization ran: the segments are the best turns we have
            turns = [(s.start, s.end, s.speaker or DEFAULT_SPEAKER) for s in transcript.segments]
        lines = []
        for start, end, label in sorted(turns):
            start = max(0.0, start)
            if end - start <= 0:
                continue
            speaker = rttm_token(options.speaker(label), DEFAULT_SPEAKER)
            onset, length = decimal_seconds(start), decimal_seconds(end - start)
            lines.append(f"SPEAKER {uri} 1 {onset} {length} <NA> <NA> {speaker} <NA> <NA>\n")
        return {".rttm": "".join(lines).encode("utf-8")}
