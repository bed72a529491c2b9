"""The canonical result model: Word, Segment, Turn, Attempt, Transcript, with lossless JSON round-trip.

The transcript JSON written by :meth:`Transcript.save` is the artefact every later stage and every
export format reads.
The transcription stage's records live here too: :class:`ChunkResult`, :class:`TranscriptionRun`, and
the :class:`Resume` / :class:`ChunkEvent` exchanged between the engine and the checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .oom import RunState

SCHEMA_VERSION = 1

DEFAULT_SPEAKER = "SPEAKER_00"
"""The speaker of words and segments that no diarization labelled."""


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

    @classmethod
    def of_words(cls, words: list[Word], speaker: str | None = None) -> Segment:
        """The segment of these words (in time order): first word's start to last word's end, their text."""
        return cls(start=words[0].start, end=words[-1].end, text="".join(w.text for w in words).strip(),
                   speaker=speaker, words=list(words))


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
class ChunkResult:
    """One chunk's transcription, times already in file time."""

    index: int
    start: float
    end: float
    segments: list[Segment]
    language: str | None
    language_probability: float | None
    seconds: float
    device: str
    compute_type: str
    batch_size: int
    redecoded: list[dict[str, Any]] = field(default_factory=list)
    """Stretches the second pass decoded again: ``{"start", "end", "words"}`` (file seconds, words found)."""
    redecode_seconds: float = 0.0
    """Time of the second pass (included in ``seconds``)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChunkResult:
        return cls(**{**data, "segments": [Segment.from_dict(s) for s in data["segments"]]})


@dataclass
class TranscriptionRun:
    """All chunks of a file, the attempts it took, and the state it ended in."""

    chunks: list[ChunkResult]
    attempts: list[Attempt] = field(default_factory=list)
    state: RunState | None = None
    resumed_chunks: int = 0

    @property
    def segments(self) -> list[Segment]:
        return [s for c in self.chunks for s in c.segments]

    @property
    def language(self) -> str | None:
        return next((c.language for c in self.chunks if c.language), None)

    @property
    def language_probability(self) -> float | None:
        return next((c.language_probability for c in self.chunks if c.language), None)


@dataclass
class Resume:
    """Where an earlier try left off: its contiguous finished chunks, OOM state and attempts."""

    chunks: list[ChunkResult] = field(default_factory=list)
    state: RunState | None = None
    attempts: list[Attempt] = field(default_factory=list)


@dataclass
class ChunkEvent:
    """Progress of a run: a finished ``chunk``, or (``chunk`` None) an OOM shrink to ``state``.

    ``attempts`` is every attempt so far, earlier tries included.
    """

    chunk: ChunkResult | None
    state: RunState
    attempts: list[Attempt]


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
    coverage: dict[str, Any] = field(default_factory=dict)
    """Speech left without words (:func:`tasks.coverage.coverage`): speech seconds (diarization, else VAD),
    seconds and stretches without a word, and the stretches the second pass decoded again."""

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
            key = s.speaker or DEFAULT_SPEAKER
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
