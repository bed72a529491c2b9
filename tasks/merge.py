"""Assign every word to a speaker, then cut the words into segments people can read.

A word takes the speaker whose turns overlap it most; a word in a gap takes the nearest turn. One sweep
over words and turns sorted by time: O(words + turns) for non-overlapping turns (the exclusive
diarization), and still near-linear with overlapping ones.

Inside a sentence (words up to a sentence end or a pause longer than ``max_gap_s``) a speaker change must be
backed by the audio: a run of one or two words on another speaker is given to its neighbours unless the
diarization has that speaker alone (no overlap) under most of the run, in a stretch of at least
``fragment_turn_s``, and a sentence made only of such short runs stays whole; a remaining change moves to a
nearby comma when the turns allow it. Segments are then cut
where the speaker changes, at every pause longer than ``max_gap_s``, and before they pass ``max_s`` (at the
last sentence end that fits, else a phrase end, else the longest pause).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from .result import DEFAULT_SPEAKER, Segment, Turn, Word

SENTENCE_END = (".", "?", "!", "…", "。", "？", "！")
PHRASE_END = (",", ";", ":", "—", "–", "、", "，", "；", "：")


@dataclass(frozen=True)
class SegmentRules:
    """How words become segments (the first two come from ``Settings.segment_max_gap_s`` / ``segment_max_s``)."""

    max_gap_s: float = 1.0
    """A pause longer than this between two words ends a segment (and a sentence, for fragments)."""
    max_s: float = 30.0
    """No segment runs longer than this."""
    fragment_words: int = 2
    """Runs of at most this many words on another speaker inside a sentence need strong evidence."""
    fragment_cover: float = 0.5
    """Strong evidence: that speaker alone is active under more than this share of the run's word time …"""
    fragment_turn_s: float = 1.0
    """… in a stretch (that speaker alone) at least this long."""
    phrase_bonus_s: float = 0.2
    """A speaker change moves to a phrase end (comma …) when that costs less than this much turn overlap."""


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


def merge(segments: Sequence[Segment], turns: Sequence[Turn], overlapping: Sequence[Turn] | None = None,
          rules: SegmentRules | None = None) -> list[Segment]:
    """Speaker-attributed, readable segments from transcription segments and diarization turns.

    ``turns`` decide each word's speaker (the exclusive diarization); ``overlapping`` (the full diarization,
    default ``turns``) tells where one speaker is alone, the evidence a short speaker change needs.
    """
    rules = rules or SegmentRules()
    words = [w for s in segments for w in s.words]
    assign_speakers(words, turns)
    if not words:  # transcribed without word timestamps: attribute whole segments
        segment_words = [Word(s.start, s.end, s.text) for s in segments]
        assign_speakers(segment_words, turns)
        return [Segment(s.start, s.end, s.text, w.speaker, []) for s, w in zip(segments, segment_words)]
    if turns:
        solo = Solo(overlapping if overlapping is not None else turns)
        exclusive = Solo(turns)
        for unit in sentences(words, rules.max_gap_s):
            _smooth(unit, solo, exclusive, rules)
    return cut_segments(words, rules)


def sentences(words: Sequence[Word], max_gap_s: float) -> list[list[Word]]:
    """Words (in order) cut after each sentence end and at each pause longer than ``max_gap_s``."""
    out: list[list[Word]] = []
    cur: list[Word] = []
    end = float("-inf")
    for w in words:
        if cur and (w.start - end > max_gap_s or cur[-1].text.rstrip().endswith(SENTENCE_END)):
            out.append(cur)
            cur = []
        cur.append(w)
        end = w.end if len(cur) == 1 else max(end, w.end)
    if cur:
        out.append(cur)
    return out


def _runs(words: Sequence[Word]) -> list[tuple[int, int]]:
    """Index ranges [i, j) of consecutive words with one speaker."""
    runs: list[tuple[int, int]] = []
    i = 0
    for j in range(1, len(words) + 1):
        if j == len(words) or words[j].speaker != words[i].speaker:
            runs.append((i, j))
            i = j
    return runs


def fragments(words: Sequence[Word], max_gap_s: float = SegmentRules.max_gap_s,
              max_words: int = SegmentRules.fragment_words) -> list[list[Word]]:
    """Runs of at most ``max_words`` words on a speaker inside a sentence that another speaker also speaks in."""
    out = []
    for unit in sentences(words, max_gap_s):
        runs = _runs(unit)
        if len(runs) > 1:
            out += [unit[i:j] for i, j in runs if j - i <= max_words]
    return out


class Solo:
    """Stretches of a diarization where exactly one speaker is active (disjoint, in time order)."""

    def __init__(self, turns: Sequence[Turn]):
        events = sorted([(t.start, 1, t.speaker) for t in turns if t.end > t.start]
                        + [(t.end, -1, t.speaker) for t in turns if t.end > t.start], key=lambda e: (e[0], e[1]))
        active: dict[str, int] = {}
        self.stretches: list[Turn] = []
        prev = None
        for time, delta, speaker in events:
            live = [s for s, n in active.items() if n > 0]
            if prev is not None and time > prev and len(live) == 1:
                last = self.stretches[-1] if self.stretches else None
                if last and last.speaker == live[0] and last.end >= prev - 1e-9:
                    last.end = time
                else:
                    self.stretches.append(Turn(prev, time, live[0]))
            active[speaker] = active.get(speaker, 0) + delta
            prev = time
        self.starts = [t.start for t in self.stretches]

    def overlap(self, start: float, end: float, speaker: str | None) -> tuple[float, float]:
        """Seconds of [start, end] where ``speaker`` is alone, and the longest such stretch touched."""
        total, longest = 0.0, 0.0
        k = max(0, bisect.bisect_right(self.starts, start) - 1)
        while k < len(self.stretches) and self.stretches[k].start < end:
            t = self.stretches[k]
            shared = min(t.end, end) - max(t.start, start)
            if t.speaker == speaker and shared > 0:
                total += shared
                longest = max(longest, t.end - t.start)
            k += 1
        return total, longest


def _evidence(run: Sequence[Word], speaker: str | None, solo: Solo) -> tuple[float, float]:
    """Share of the run's word time where ``speaker`` is alone, and the longest such stretch."""
    time = sum(max(0.0, w.end - w.start) for w in run)
    covered, longest = 0.0, 0.0
    for w in run:
        c, lng = solo.overlap(w.start, w.end, speaker)
        covered += c
        longest = max(longest, lng)
    return (covered / time if time > 0 else 0.0), longest


def _smooth(unit: list[Word], solo: Solo, exclusive: Solo, rules: SegmentRules) -> None:
    """Give weak short runs to their neighbours, then move each remaining change to the best nearby boundary."""
    while True:
        runs = _runs(unit)
        if len(runs) < 2:
            return
        if all(j - i <= rules.fragment_words for i, j in runs):  # a short sentence is never split: it goes to
            speakers = list(dict.fromkeys(w.speaker for w in unit))  # the speaker alone under most of it
            best = max(speakers, key=lambda s: (_evidence(unit, s, solo)[0], _evidence(unit, s, exclusive)[0],
                                                -speakers.index(s)))
            for w in unit:
                w.speaker = best
            return
        weak = []
        for n, (i, j) in enumerate(runs):
            if j - i > rules.fragment_words:
                continue
            cover, longest = _evidence(unit[i:j], unit[i].speaker, solo)
            if cover <= rules.fragment_cover or longest < rules.fragment_turn_s:
                weak.append(((cover, longest, j - i), n))
        if not weak:
            break
        _, n = min(weak)
        i, j = runs[n]
        neighbours = [unit[runs[m][0]].speaker for m in (n - 1, n + 1) if 0 <= m < len(runs)]
        best = max(neighbours, key=lambda s: (_evidence(unit[i:j], s, solo)[0],
                                              _evidence(unit[i:j], s, exclusive)[0], -neighbours.index(s)))
        for w in unit[i:j]:
            w.speaker = best
    _place_changes(unit, exclusive, rules)


def _place_changes(unit: list[Word], exclusive: Solo, rules: SegmentRules) -> None:
    """Move each speaker change by up to two words to where the turns support it best, phrase ends preferred."""
    runs = _runs(unit)
    for n in range(len(runs) - 1):
        (a0, a1), (b0, b1) = runs[n], runs[n + 1]
        if min(a1 - a0, b1 - b0) <= rules.fragment_words:
            continue  # a short run kept on evidence stays as it is
        left, right = unit[a0].speaker, unit[b0].speaker
        lo, hi = max(a0 + rules.fragment_words + 1, a1 - 2), min(b1 - rules.fragment_words - 1, a1 + 2)
        if lo >= hi:
            continue
        # seconds of each word in [lo, hi) under the left and under the right speaker alone
        gain = [(exclusive.overlap(w.start, w.end, left)[0], exclusive.overlap(w.start, w.end, right)[0])
                for w in unit[lo:hi]]

        def score(k: int, lo: int = lo, a1: int = a1, gain: list[tuple[float, float]] = gain) -> tuple[float, int]:
            got = sum(g[0] for g in gain[: k - lo]) + sum(g[1] for g in gain[k - lo:])
            phrase = unit[k - 1].text.rstrip().endswith(PHRASE_END)
            return got + (rules.phrase_bonus_s if phrase else 0.0), -abs(k - a1)

        best = max(range(lo, hi + 1), key=score)
        for k in range(lo, hi):
            unit[k].speaker = left if k < best else right
        runs[n], runs[n + 1] = (a0, best), (best, b1)


def cut_segments(words: Sequence[Word], rules: SegmentRules | None = None) -> list[Segment]:
    """Segments of one speaker, cut at every pause longer than ``max_gap_s`` and kept within ``max_s``."""
    rules = rules or SegmentRules()
    out: list[Segment] = []
    cur: list[Word] = []
    end = float("-inf")
    for w in words:
        if cur and (w.speaker != cur[-1].speaker or w.start - end > rules.max_gap_s):
            out += [_segment(part) for part in _within(cur, rules.max_s)]
            cur = []
        cur.append(w)
        end = w.end if len(cur) == 1 else max(end, w.end)
    if cur:
        out += [_segment(part) for part in _within(cur, rules.max_s)]
    return out


def _within(words: list[Word], max_s: float) -> list[list[Word]]:
    """Cut a run of words into parts of at most ``max_s``: at the last sentence end that fits, else the last
    phrase end, else the longest pause."""
    parts: list[list[Word]] = []
    while words and max(w.end for w in words) - words[0].start > max_s:
        last, end = 1, words[0].end
        while last + 1 < len(words) and max(end, words[last].end) - words[0].start <= max_s:
            end = max(end, words[last].end)
            last += 1
        k = max(range(1, last + 1), key=lambda k, ws=words: _cut_rank(ws, k))
        parts.append(words[:k])
        words = words[k:]
    if words:
        parts.append(words)
    return parts


def _cut_rank(words: Sequence[Word], k: int) -> tuple[int, float]:
    """How good a cut before word ``k`` is: sentence end, then phrase end (the later the better), then pause."""
    text = words[k - 1].text.rstrip()
    kind = 2 if text.endswith(SENTENCE_END) else 1 if text.endswith(PHRASE_END) else 0
    return kind, (k if kind else words[k].start - words[k - 1].end)


def speaker_order(segments: Sequence[Segment], turns: Sequence[Turn] = ()) -> list[str]:
    """Speakers by first appearance in the transcript, then any that only the diarization has."""
    seen: dict[str, None] = {}
    for s in segments:
        if s.speaker:
            seen.setdefault(s.speaker, None)
    for t in sorted(turns, key=lambda t: t.start):
        seen.setdefault(t.speaker, None)
    return list(seen)
