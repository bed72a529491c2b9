"""The canonical result model: Word, Segment, Turn, Attempt, Transcript, with lossless JSON round-trip.

The transcript JSON written by :meth:`Transcript.save` is the artefact every later stage and every
export format reads.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1


@dataclass
class Word:
    start: float
    end: float
    text: str
    probability: float = 1.0
    speaker: str | None = None


@dataclass
class Segment:
    start: float
    end: float
    text: str
    speaker: str | None = None
    words: list[Word] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Segment:
        words = [Word(**w) for w in data.get("words", [])]
        return cls(**{**_known(cls, data), "words": words})


@dataclass
class Turn:
    """One speaker turn of the diarization (overlaps allowed)."""

    start: float
    end: float
    speaker: str


@dataclass
class Attempt:
    """One try at one unit of work (a chunk, or diarization), as recorded for OOM shrinking."""

    stage: str
    device: str
    outcome: str  # "ok" | "oom" | "error"
    chunk_index: int | None = None
    start: float | None = None
    end: float | None = None
    chunk_s: float | None = None
    batch_size: int | None = None
    compute_type: str | None = None
    seconds: float = 0.0
    error: str | None = None
    cpu_fallback: bool = False


@dataclass
class Transcript:
    """A whole file's result: words and segments with speakers, plus how they were produced."""

    language: str | None
    duration: float
    segments: list[Segment] = field(default_factory=list)
    speakers: list[str] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    language_probability: float | None = None
    model: str | None = None
    device: str | None = None
    compute_type: str | None = None
    diarization: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)
    chunks: list[dict[str, Any]] = field(default_factory=list)
    source: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    version: int = SCHEMA_VERSION

    @property
    def words(self) -> list[Word]:
        return [w for s in self.segments for w in s.words]

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments).strip()

    def speaker_durations(self) -> dict[str, float]:
        """Talk time per speaker, from the segments, in order of first appearance."""
        out: dict[str, float] = {}
        for s in self.segments:
            key = s.speaker or "SPEAKER_00"
            out[key] = out.get(key, 0.0) + max(0.0, s.end - s.start)
        return out

    # -- serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Transcript:
        base = _known(cls, data)
        base["segments"] = [Segment.from_dict(s) for s in data.get("segments", [])]
        base["turns"] = [Turn(**_known(Turn, t)) for t in data.get("turns", [])]
        base["attempts"] = [Attempt(**_known(Attempt, a)) for a in data.get("attempts", [])]
        return cls(**base)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=indent)

    @classmethod
    def from_json(cls, text: str) -> Transcript:
        return cls.from_dict(json.loads(text))

    @classmethod
    def load(cls, path: str | Path) -> Transcript:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The keys of ``data`` that are fields of ``cls`` (newer files may carry more)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}
