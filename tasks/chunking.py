"""Chunk plan: cut long audio into spans of about a target length, only at silences between VAD groups.

Transcription uses faster-whisper's batched pipeline, which finds speech with Silero VAD and decodes it
in groups of at most 30 s of speech, each group on its own. The plan runs that same VAD once for the
whole file, forms the same groups, and cuts chunks only between groups (in the middle of the silence
that separates them). Each chunk is then decoded from the file's own VAD regions, so a chunked run
decodes exactly the groups an un-chunked run would: no word is cut, dropped or doubled at a seam.
Plans are deterministic and JSON-serialisable, and can re-plan the rest of a file with a shorter target.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .audio import SAMPLE_RATE
from .offline import ensure_offline

if TYPE_CHECKING:
    from .settings import Settings

CLIP_S = 30.0  # faster-whisper's chunk_length: at most this much speech per decoded group
_VAD = {"max_speech_duration_s": CLIP_S, "min_silence_duration_ms": 160}  # the batched pipeline's defaults


@dataclass(frozen=True)
class Span:
    """One chunk of the file, in seconds (multiples of 1 ms, so sample-exact at 16 kHz).

    ``hard_cut``: no silence between groups was in reach, so the end had to fall inside a group.
    """

    index: int
    start: float
    end: float
    hard_cut: bool = False
    has_speech: bool = True

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class ChunkPlan:
    """The spans of one file, plus the VAD regions and cut points they were made from."""

    duration: float
    target_s: float
    min_s: float
    max_s: float
    spans: tuple[Span, ...]
    cuts: tuple[float, ...] = field(default=(), repr=False)
    regions: tuple[tuple[int, int], ...] = field(default=(), repr=False)  # speech, in samples

    @property
    def speech_s(self) -> float:
        return sum(e - s for s, e in self.regions) / SAMPLE_RATE

    def regions_in(self, span: Span) -> list[dict[str, int]]:
        """Speech regions inside ``span``, in samples relative to its start (clipped at hard cuts)."""
        lo, hi = round(span.start * SAMPLE_RATE), round(span.end * SAMPLE_RATE)
        return [
            {"start": max(s, lo) - lo, "end": min(e, hi) - lo}
            for s, e in self.regions
            if e > lo and s < hi and min(e, hi) - max(s, lo) > 0
        ]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChunkPlan:
        return cls(
            duration=data["duration"],
            target_s=data["target_s"],
            min_s=data["min_s"],
            max_s=data["max_s"],
            spans=tuple(Span(**s) for s in data["spans"]),
            cuts=tuple(data.get("cuts", ())),
            regions=tuple(tuple(r) for r in data.get("regions", ())),
        )

    def replan(self, start_at: float, target_s: float, first_index: int = 0) -> ChunkPlan:
        """Plan ``[start_at, duration]`` again with another target; min and max scale with it."""
        scale = target_s / self.target_s
        return _plan(self.duration, self.cuts, self.regions, target_s, self.min_s * scale, self.max_s * scale,
                     start_at, first_index)


def speech_regions(audio: np.ndarray) -> list[tuple[int, int]]:
    """Silero VAD speech regions (samples) with the batched pipeline's own options."""
    ensure_offline()
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    found = get_speech_timestamps(np.asarray(audio, dtype=np.float32), VadOptions(**_VAD), SAMPLE_RATE)
    return [(int(r["start"]), int(r["end"])) for r in found]


def group_cuts(regions: list[tuple[int, int]]) -> list[float]:
    """Cut points (seconds) between the groups faster-whisper forms: at most CLIP_S of speech each.

    Mirrors ``faster_whisper.vad.collect_chunks``: regions join the current group until the next one
    would push its speech over CLIP_S. A cut sits in the middle of the silence before a new group.
    """
    cuts, speech, limit = [], 0, CLIP_S * SAMPLE_RATE
    for i, (start, end) in enumerate(regions):
        if i > 0 and speech + (end - start) > limit:
            previous_end = regions[i - 1][1]
            cuts.append(round((previous_end + start) / 2 / SAMPLE_RATE, 3))
            speech = 0
        speech += end - start
    return cuts


def make_plan(audio: np.ndarray, settings: Settings) -> ChunkPlan:
    """The chunk plan of a file with the settings' chunk lengths (what the plan stage computes)."""
    return plan_chunks(audio, settings.chunk_target_s, settings.chunk_min_s, settings.chunk_max_s)


def plan_chunks(audio: np.ndarray, target_s: float = 240.0, min_s: float = 120.0, max_s: float = 360.0) -> ChunkPlan:
    """Plan chunks of ``min_s``..``max_s`` seconds, as close to ``target_s`` as the cut points allow."""
    regions = speech_regions(audio)
    return _plan(len(audio) / SAMPLE_RATE, tuple(group_cuts(regions)), tuple(regions), target_s, min_s, max_s,
                 0.0, 0)


def _plan(duration: float, cuts: tuple[float, ...], regions: tuple[tuple[int, int], ...], target_s: float,
          min_s: float, max_s: float, start_at: float, first_index: int) -> ChunkPlan:
    duration = round(duration, 3)  # spans are in milliseconds; a sub-ms tail is not a chunk
    spans: list[Span] = []
    cursor, index = round(float(start_at), 3), first_index
    while duration - cursor > 1e-9:
        if duration - cursor <= max_s:
            end, hard = duration, False
        else:
            end, hard = _choose_cut(cuts, cursor, target_s, min_s, max_s)
        has_speech = any(e > cursor * SAMPLE_RATE and s < end * SAMPLE_RATE for s, e in regions)
        spans.append(Span(index, cursor, end, hard, has_speech))
        cursor, index = end, index + 1
    return ChunkPlan(duration, target_s, min_s, max_s, tuple(spans), tuple(cuts), tuple(regions))


def _choose_cut(
    cuts: tuple[float, ...], cursor: float, target_s: float, min_s: float, max_s: float
) -> tuple[float, bool]:
    """The cut point nearest the target within [min, max]; a hard cut at max when there is none."""
    lo, hi, goal = cursor + min_s, cursor + max_s, cursor + target_s
    in_reach = [c for c in cuts if lo <= c <= hi]
    if not in_reach:
        return round(hi, 3), True
    return min(in_reach, key=lambda c: (abs(c - goal), c)), False
