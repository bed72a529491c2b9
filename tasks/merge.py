"""Assign every word to a speaker and regroup into speaker-homogeneous segments.

A word takes the speaker whose turns overlap it most; a word in a gap takes the nearest turn. One sweep
over words and turns sorted by time: O(words + turns) for non-overlapping turns (the exclusive
diarization), and still near-linear with overlapping ones.
"""

from __future__ import annotations

from collections.abc import Sequence

from .result import DEFAULT_SPEAKER, Segment, Turn, Word


def assign_speakers(words: Sequence[Word], turns: Sequence[Turn]) -> list[Word]:
    """Set ``word.speaker`` on every word (in place) and return them in time order."""
    ordered = sorted(words, key=lambda w: (w.start, w.end))
    if not turns:
        for w in ordered:
            w.speaker = DEFAULT_SPEAKER
        return ordered
    turns = sorted(turns, key=lambda t: (t.start, t.end))
    # prefix maximum of turn ends: every turn before `first` ends before the current word starts
    max_end: list[float] = []
    latest: list[int] = []  # index of the turn that reaches max_end
    for i, t in enumerate(turns):
        if not max_end or t.end > max_end[-1]:
            max_end.append(t.end)
            latest.append(i)
        else:
            max_end.append(max_end[-1])
            latest.append(latest[-1])
    first = 0
    for w in ordered:
        while first < len(turns) and max_end[first] <= w.start:
            first += 1
        overlap: dict[str, float] = {}
        k = first
        while k < len(turns) and turns[k].start < w.end:
            t = turns[k]
            shared = min(t.end, w.end) - max(t.start, w.start)
            if shared > 0:
                overlap[t.speaker] = overlap.get(t.speaker, 0.0) + shared
            k += 1
        if overlap:
            w.speaker = max(overlap.items(), key=lambda kv: (kv[1], kv[0]))[0]
        else:
            before = [turns[latest[first - 1]]] if first > 0 else []
            w.speaker = _nearest([*before, *turns[first: k + 1]], w)
    return ordered


def _nearest(candidates: Sequence[Turn], w: Word) -> str:
    """Speaker of the candidate turn closest to a word that no turn overlaps."""
    mid = (w.start + w.end) / 2

    def distance(t: Turn) -> float:
        return 0.0 if t.start <= mid <= t.end else min(abs(mid - t.start), abs(mid - t.end))

    return min(candidates, key=lambda t: (distance(t), t.speaker)).speaker


def regroup(segments: Sequence[Segment]) -> list[Segment]:
    """Split each segment wherever the speaker of its words changes; text is rebuilt from the words."""
    out: list[Segment] = []
    for seg in segments:
        if not seg.words:
            out.append(Segment(seg.start, seg.end, seg.text, seg.speaker or DEFAULT_SPEAKER, []))
            continue
        run: list[Word] = [seg.words[0]]
        for w in seg.words[1:]:
            if w.speaker == run[-1].speaker:
                run.append(w)
            else:
                out.append(_segment(run))
                run = [w]
        out.append(_segment(run))
    return out


def _segment(words: list[Word]) -> Segment:
    return Segment(
        start=words[0].start,
        end=max(w.end for w in words),
        text="".join(w.text for w in words).strip(),
        speaker=words[0].speaker,
        words=list(words),
    )


def merge(segments: Sequence[Segment], turns: Sequence[Turn]) -> list[Segment]:
    """Speaker-attributed segments from transcription segments and diarization turns."""
    words = [w for s in segments for w in s.words]
    assign_speakers(words, turns)
    if not words:  # transcribed without word timestamps: attribute whole segments
        segment_words = [Word(s.start, s.end, s.text) for s in segments]
        assign_speakers(segment_words, turns)
        return [Segment(s.start, s.end, s.text, w.speaker, []) for s, w in zip(segments, segment_words)]
    return regroup(segments)


def speaker_order(segments: Sequence[Segment], turns: Sequence[Turn] = ()) -> list[str]:
    """Speakers by first appearance in the transcript, then any that only the diarization has."""
    seen: dict[str, None] = {}
    for s in segments:
        if s.speaker:
            seen.setdefault(s.speaker, None)
    for t in sorted(turns, key=lambda t: t.start):
        seen.setdefault(t.speaker, None)
    return list(seen)
