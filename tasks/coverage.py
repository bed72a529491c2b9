"""Coverage: which speech holds no transcribed word, measured the same way everywhere.

Batched faster-whisper decodes up to 30 s of speech per group without timestamps; when a group mixes
voices or recording conditions the decoder can stop early and a whole turn gets no word (faster-whisper
#1179). :func:`uncovered` finds such stretches (speech with no word within ``margin_s``), the
transcription's second pass decodes them again on their own, and :func:`coverage` reports what is left
(the transcript's ``coverage`` and the merge stage's metrics row).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

Interval = tuple[float, float]

MARGIN_S = 0.5
"""A word covers the speech up to this far on either side of it."""
MIN_STRETCH_S = 1.0
"""Shorter stretches without words are not counted (pauses, breaths, the edges of turns)."""
MAX_WORD_S = 2.0
"""A longer "word" covers nothing: when the decoder dropped speech, the word alignment stretches the next
word over it (3-4 s for "the" before a lost turn), which would hide the loss."""


def union(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, non-overlapping intervals covering the same time (touching ones joined)."""
    out: list[list[float]] = []
    for start, end in sorted((float(s), float(e)) for s, e in intervals if e > s):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(s, e) for s, e in out]


def uncovered(speech: Iterable[Interval], words: Iterable[Interval], *, margin_s: float = MARGIN_S,
              min_s: float = MIN_STRETCH_S, max_word_s: float = MAX_WORD_S) -> list[Interval]:
    """Stretches of ``speech`` of at least ``min_s`` with no word (of at most ``max_word_s``) within
    ``margin_s`` (sorted)."""
    covered = union((s - margin_s, e + margin_s) for s, e in words if e - s <= max_word_s)
    out: list[Interval] = []
    for start, end in union(speech):
        cursor = start
        for cs, ce in covered:
            if ce <= cursor or cs >= end:
                continue
            if cs > cursor:
                out.append((cursor, cs))
            cursor = max(cursor, ce)
        if cursor < end:
            out.append((cursor, end))
    return [(round(s, 3), round(e, 3)) for s, e in out if e - s >= min_s - 1e-9]


def coverage(speech: Iterable[Interval], words: Iterable[Interval], redecoded: Sequence[dict] = (), *,
             source: str = "diarization", max_word_s: float = MAX_WORD_S) -> dict[str, object]:
    """What the transcript's ``coverage`` says: speech seconds, seconds and stretches without words, and the
    stretches the second pass decoded again (with the words it found; how many in a window of their own, how
    many were sparse regions: VAD regions with too few words for their length)."""
    merged = union(speech)
    speech_s = sum(e - s for s, e in merged)
    missing = uncovered(merged, words, max_word_s=max_word_s)
    missing_s = sum(e - s for s, e in missing)
    return {
        "speech_source": source,
        "speech_s": round(speech_s, 2),
        "without_words_s": round(missing_s, 2),
        "without_words_ratio": round(missing_s / speech_s, 4) if speech_s else 0.0,
        "stretches_without_words": [[s, e] for s, e in missing],
        "redecoded": len(redecoded),
        "redecoded_s": round(sum(r["end"] - r["start"] for r in redecoded), 2),
        "redecoded_words": sum(int(r.get("words", 0)) for r in redecoded),
        "redecoded_alone": sum(1 for r in redecoded if r.get("alone")),
        "redecoded_sparse": sum(1 for r in redecoded if r.get("sparse")),
    }
