"""What the document formats (PDF, DOCX, Markdown) share: the summary, speaker colours, paragraphs."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ..result import DEFAULT_SPEAKER, Segment, Transcript
from .base import ExportOptions
from .timefmt import clock, span

# Distinct colours that stay readable as text on white (darkened Tableau/Okabe-Ito hues).
PALETTE = (
    "#1f5fa8", "#c0392b", "#1e8449", "#7d3c98", "#b9570b",
    "#0e7c86", "#a0306f", "#6e4b3a", "#4d5d1f", "#5d6d7e",
)

PARAGRAPH_MAX_S = 60.0
"""A speaker's paragraph is cut at the next segment boundary after this long, so timestamps stay frequent."""
PARAGRAPH_GAP_S = 8.0
"""A pause this long inside one speaker's speech starts a new paragraph."""


@dataclass
class SpeakerInfo:
    label: str
    name: str
    colour: str
    seconds: float
    share: float
    """Fraction (0–1) of all talk time."""


@dataclass
class Paragraph:
    start: float
    end: float
    label: str
    name: str
    colour: str
    text: str


@dataclass
class Document:
    """The content of a transcript document, independent of the output format."""

    title: str
    file: str
    date: str
    duration: str
    language: str
    model: str
    speakers: list[SpeakerInfo] = field(default_factory=list)
    paragraphs: list[Paragraph] = field(default_factory=list)

    @property
    def details(self) -> list[tuple[str, str]]:
        return [("File", self.file), ("Date", self.date), ("Duration", self.duration),
                ("Language", self.language), ("Model", self.model), ("Speakers", str(len(self.speakers)))]


def all_speakers(transcript: Transcript) -> list[str]:
    """Every speaker label a document lists: the transcript's ``speakers`` first, then labels that only its segments
    (an unlabelled one counts as the default speaker) or its turns have, by first occurrence."""
    order = list(transcript.speakers)
    for label in [s.speaker or DEFAULT_SPEAKER for s in transcript.segments] + [t.speaker for t in transcript.turns]:
        if label not in order:
            order.append(label)
    return order


def speaker_colours(transcript: Transcript, options: ExportOptions | None = None) -> dict[str, str]:
    """One colour per speaker; labels with the same display name (merged) share the first one's."""
    first: dict[str, str] = {}
    out = {}
    for i, label in enumerate(all_speakers(transcript)):
        name = options.speaker(label) if options else label
        out[label] = first.setdefault(name, PALETTE[i % len(PALETTE)])
    return out


def paragraphs(transcript: Transcript, options: ExportOptions) -> list[Paragraph]:
    """Consecutive segments of one speaker joined, cut after long pauses or every minute or so."""
    colours = speaker_colours(transcript, options)
    out: list[Paragraph] = []
    for seg in transcript.segments:
        label = seg.speaker or DEFAULT_SPEAKER
        text = seg.text.strip()
        if not text:
            continue
        last = out[-1] if out else None
        if (last and last.name == options.speaker(label) and seg.start - last.end < PARAGRAPH_GAP_S
                and seg.start - last.start < PARAGRAPH_MAX_S):
            last.text = f"{last.text} {text}"
            last.end = max(last.end, seg.end)
        else:
            out.append(Paragraph(seg.start, seg.end, label, options.speaker(label), colours[label], text))
    return out


def language_name(code: str | None) -> str:
    if not code:
        return "not detected"
    try:
        from babel import Locale  # optional, only for a nicer name

        return f"{Locale.parse(code).english_name} ({code})"
    except Exception:
        return code


def document(transcript: Transcript, options: ExportOptions) -> Document:
    """Everything a PDF/DOCX/Markdown transcript shows."""
    talk = transcript.speaker_durations()
    total = sum(talk.values())
    colours = speaker_colours(transcript, options)
    speakers: dict[str, SpeakerInfo] = {}  # by display name: labels given one name are one person
    for label in all_speakers(transcript):
        name, seconds = options.speaker(label), talk.get(label, 0.0)
        if name in speakers:
            speakers[name].seconds += seconds
            speakers[name].share = speakers[name].seconds / total if total > 0 else 0.0
        else:
            speakers[name] = SpeakerInfo(label, name, colours[label], seconds, seconds / total if total > 0 else 0.0)
    model = transcript.model or "unknown"
    if transcript.device:
        model += f" on {transcript.device}"
    return Document(
        title=options.title,
        file=Path(str(transcript.source.get("file") or "unknown")).name,
        date=options.date or datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z").strip(),
        duration=f"{clock(transcript.duration)} ({span(transcript.duration)})",
        language=language_name(transcript.language),
        model=model,
        speakers=list(speakers.values()),
        paragraphs=paragraphs(transcript, options),
    )


def segment_words(seg: Segment) -> list[tuple[float, float, str]]:
    """(start, end, text) per word; words spread evenly over the segment when it has no word times."""
    words = [(w.start, w.end, w.text) for w in seg.words if w.text.strip()]
    if words or not seg.text.strip():
        return words
    tokens = seg.text.split()
    length = sum(len(t) + 1 for t in tokens)
    out, t = [], seg.start
    for tok in tokens:
        d = (seg.end - seg.start) * (len(tok) + 1) / length
        out.append((t, t + d, " " + tok))
        t += d
    return out
