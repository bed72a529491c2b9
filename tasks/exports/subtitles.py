"""SRT and WebVTT: speaker-labelled cues cut at word boundaries within line, line-count and duration limits.

Cues are built from word timestamps: a cue ends at a speaker change, a long pause, a sentence end (once it
has lasted ``min_duration``), or before the next word would break the ``max_chars`` × ``max_lines`` layout or
``max_duration``; a group shorter than ``min_duration`` joins its neighbour when the limits allow. Times are then
made strictly non-overlapping and ordered, at least 0, and stretched to ``min_duration`` where the next cue
leaves room (else started earlier, where the previous one leaves room).
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass

from ..result import DEFAULT_SPEAKER, Transcript
from .base import ExportOptions, SubtitleOptions, Writer
from .common import segment_words
from .timefmt import timestamp

SENTENCE_END = (".", "?", "!", "…", "。", "？", "！")
MAX_NAME = 18
"""Speaker names in cues are shortened to this many characters, so a name never crowds out the text."""


@dataclass
class Cue:
    start_ms: int
    end_ms: int
    speaker: str
    lines: list[str]


def width(text: str) -> int:
    """Display width: East Asian wide and full-width characters count as two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _join(tokens: list[str]) -> str:
    return "".join(tokens).strip()


def layout(tokens: list[str], max_chars: int, max_lines: int) -> list[str] | None:
    """Lines (at most ``max_lines`` of at most ``max_chars``) breaking only between tokens; None if impossible.

    Tokens carry their own leading space (faster-whisper style), so CJK tokens join without one.
    Prefers one line, then the most balanced split.
    """
    if width(_join(tokens)) <= max_chars:
        return [_join(tokens)]
    if max_lines < 2:
        return None
    best: tuple[int, list[str]] | None = None
    for k in range(1, len(tokens)):
        first = _join(tokens[:k])
        if width(first) > max_chars:
            break
        rest = layout(tokens[k:], max_chars, max_lines - 1)
        if rest is not None:
            score = max(width(line) for line in [first, *rest])
            if best is None or score < best[0]:
                best = (score, [first, *rest])
    return best[1] if best else None


def _short(name: str) -> str:
    return name if len(name) <= MAX_NAME else name[: MAX_NAME - 1].rstrip() + "…"


def _split_long(start: float, end: float, text: str, limit: int) -> list[tuple[float, float, str]]:
    """A token wider than a line, cut into pieces with proportional times."""
    lead, body = (" ", text.lstrip()) if text[:1].isspace() else ("", text)
    pieces, cur = [], ""
    for ch in body:
        if width(cur + ch) > limit:
            pieces.append(cur)
            cur = ""
        cur += ch
    pieces.append(cur)
    out, t = [], start
    for i, piece in enumerate(pieces):
        d = (end - start) * len(piece) / max(1, len(body))
        out.append((t, t + d, (lead if i == 0 else "") + piece))
        t += d
    return out


Word = tuple[float, float, str]


def _groups(words: list[Word], head: str, limits: SubtitleOptions) -> list[list[Word]]:
    """One speaker's words cut into cue-sized groups."""
    groups: list[list[Word]] = []
    cur: list[Word] = []
    for word in words:
        if cur:
            too_long = word[1] - cur[0][0] > limits.max_duration
            pause = word[0] - cur[-1][1] > limits.max_gap
            sentence = cur[-1][2].rstrip().endswith(SENTENCE_END) and cur[-1][1] - cur[0][0] >= limits.min_duration
            too_wide = layout([head] + [w[2] for w in cur] + [word[2]], limits.max_chars, limits.max_lines) is None
            if too_long or pause or sentence or too_wide:
                groups.append(cur)
                cur = []
        cur.append(word)
    if cur:
        groups.append(cur)
    return _merge_short(groups, head, limits)


def _merge_short(groups: list[list[Word]], head: str, limits: SubtitleOptions) -> list[list[Word]]:
    """Join a group shorter than ``min_duration`` to the previous (else the next) one where the pause between
    them and the joined group stay within the limits."""
    def fits(words: list[Word]) -> bool:
        pauses = (b[0] - a[1] for a, b in zip(words, words[1:]))
        return (max(w[1] for w in words) - words[0][0] <= limits.max_duration
                and all(p <= limits.max_gap for p in pauses)
                and layout([head] + [w[2] for w in words], limits.max_chars, limits.max_lines) is not None)

    i = 0
    while i < len(groups):
        group = groups[i]
        if max(w[1] for w in group) - group[0][0] < limits.min_duration:
            joined = next((j for j in (i - 1, i + 1) if 0 <= j < len(groups)
                           and fits(groups[min(i, j)] + groups[max(i, j)])), None)
            if joined is not None:
                a = min(i, joined)
                groups[a:a + 2] = [groups[a] + groups[a + 1]]
                i = a
                continue
        i += 1
    return groups


def build_cues(transcript: Transcript, options: ExportOptions, prefix: str = "[{name}] ") -> list[Cue]:
    """Subtitle cues for the whole transcript, with ``prefix`` (formatted with the speaker name) in front."""
    limits = options.subtitles
    raw: list[tuple[float, float, str, list[str]]] = []  # start, end, speaker label, tokens
    for seg in transcript.segments:
        label = seg.speaker or DEFAULT_SPEAKER
        head = prefix.format(name=_short(options.speaker(label)))
        words: list[Word] = []
        for start, end, text in segment_words(seg):
            if width(text.strip()) > limits.max_chars:
                words += _split_long(start, end, text, limits.max_chars)
            else:
                words.append((start, end, text))
        for group in _groups(words, head, limits):
            tokens = [w[2] for w in group]
            tokens[0] = tokens[0].lstrip()  # the head ends with the space
            raw.append((group[0][0], max(w[1] for w in group), label, [head, *tokens]))
    raw.sort(key=lambda c: c[0])
    return _timed(raw, transcript.duration, limits)


def _timed(raw: list[tuple[float, float, str, list[str]]], duration: float, limits: SubtitleOptions) -> list[Cue]:
    """Millisecond times: ≥ 0, ordered, strictly non-overlapping, min/max duration where possible."""
    min_ms, max_ms = round(limits.min_duration * 1000), round(limits.max_duration * 1000)
    end_of_audio = round(duration * 1000) if duration > 0 else None
    cues: list[Cue] = []
    prev_end = 0
    for i, (start, end, speaker, tokens) in enumerate(raw):
        s = max(0, round(start * 1000), prev_end)
        e = max(round(end * 1000), s + min_ms)
        if end_of_audio is not None and e > end_of_audio:
            e = max(end_of_audio, round(end * 1000))
        if i + 1 < len(raw):
            e = min(e, max(0, round(raw[i + 1][0] * 1000)))
        e = min(max(e, s + 1), s + max_ms)
        if e - s < min_ms:  # no room after it: show it earlier, from the end of the previous cue at most
            s = max(prev_end, min(s, e - min_ms))
        lines = layout(tokens, limits.max_chars, limits.max_lines) or [_join(tokens)]
        cues.append(Cue(s, e, speaker, lines))
        prev_end = e
    return cues


def _srt_text(lines: list[str]) -> str:
    """Cue text with no blank line in it (a blank line ends an SRT cue)."""
    return re.sub(r"\n\n+", "\n", "\n".join(lines).strip("\n"))


class SrtWriter(Writer):
    key = "srt"
    description = "SubRip subtitles with speaker labels"

    def render(self, transcript: Transcript, options: ExportOptions) -> dict[str, bytes]:
        out = []
        for i, c in enumerate(build_cues(transcript, options), 1):
            start, end = timestamp(c.start_ms / 1000, ","), timestamp(c.end_ms / 1000, ",")
            out.append(f"{i}\n{start} --> {end}\n{_srt_text(c.lines)}\n\n")
        return {".srt": "".join(out).encode("utf-8")}


class VttWriter(Writer):
    key = "vtt"
    description = "WebVTT subtitles, the speaker in each cue's <v> voice tag"

    def render(self, transcript: Transcript, options: ExportOptions) -> dict[str, bytes]:
        out = ["WEBVTT", ""]
        cues = build_cues(transcript, options, prefix="")  # the voice tag names the speaker
        if not cues:
            out += ["NOTE", "No speech detected.", ""]
        for i, c in enumerate(cues, 1):
            voice = html.escape(options.speaker(c.speaker), quote=False)
            text = "\n".join(html.escape(line, quote=False) for line in c.lines)
            start, end = timestamp(c.start_ms / 1000), timestamp(c.end_ms / 1000)
            out += [str(i), f"{start} --> {end}", f"<v {voice}>{text}", ""]
        return {".vtt": "\n".join(out).encode("utf-8")}
