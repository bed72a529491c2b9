"""Assemble the canonical :class:`~tasks.result.Transcript` from the transcription and the diarization."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .files import sha256_file
from .merge import SegmentRules, merge, speaker_order
from .options import options_key, output_options
from .result import Segment, Transcript, Turn
from .settings import Settings

if TYPE_CHECKING:
    from .audio import AudioInfo
    from .diarization import Diarization
    from .result import TranscriptionRun


def source_record(path: Path, info: AudioInfo, sha256: str | None = None) -> dict[str, Any]:
    """What the transcript says about its input file."""
    return {
        "file": path.name,
        "sha256": sha256 or sha256_file(path),
        "size_bytes": info.size_bytes,
        "container": info.container,
        "codec": info.codec,
        "channels": info.channels,
        "sample_rate": info.sample_rate,
    }


def relabel_speakers(turns: Sequence[Turn], segments: Sequence[Segment] = ()) -> dict[str, str]:
    """Map diarization labels to SPEAKER_00, SPEAKER_01 … in order of each speaker's first transcribed word
    (of ``segments``), then of first speech for speakers the transcript does not have."""
    spoken = [(w.start, w.speaker) for s in segments for w in s.words] or [(s.start, s.speaker) for s in segments]
    order = [label for _, label in sorted(spoken, key=lambda x: x[0]) if label is not None]
    order += [t.speaker for t in sorted(turns, key=lambda t: (t.start, t.speaker))]
    mapping: dict[str, str] = {}
    for label in order:
        if label not in mapping:
            mapping[label] = f"SPEAKER_{len(mapping):02d}"
    return mapping


def segment_rules(settings: Settings) -> SegmentRules:
    """How the merge cuts words into segments, from the run's settings."""
    return SegmentRules(max_gap_s=settings.segment_max_gap_s, max_s=settings.segment_max_s)


def build_transcript(
    *,
    duration: float,
    run: TranscriptionRun,
    diarization: Diarization | None,
    settings: Settings,
    source: dict[str, Any],
    timings: dict[str, float],
) -> Transcript:
    """Merge transcription and diarization into the canonical Transcript."""
    turns: list[Turn] = list(diarization.turns) if diarization is not None else []
    exclusive: list[Turn] = list(diarization.exclusive) if diarization is not None else []
    segments = merge(run.segments, exclusive or turns, turns, segment_rules(settings))
    if diarization is not None:
        mapping = relabel_speakers(turns, segments)
        turns = [Turn(t.start, t.end, mapping[t.speaker]) for t in turns]
        for seg in segments:
            seg.speaker = mapping.get(seg.speaker, seg.speaker) if seg.speaker else seg.speaker
            for w in seg.words:
                w.speaker = mapping.get(w.speaker, w.speaker) if w.speaker else w.speaker
    first = run.chunks[0] if run.chunks else None
    state = run.state
    return Transcript(
        language=run.language or settings.language,
        language_probability=run.language_probability,
        duration=round(duration, 3),
        segments=segments,
        speakers=speaker_order(segments, turns),
        turns=turns,
        model=settings.model,
        device=(state.device if state else first.device if first else None),
        compute_type=(state.compute_type if state else None),
        diarization=(
            {"device": diarization.device, "params": diarization.params, "timings": diarization.timings}
            if diarization else {"enabled": False}
        ),
        timings=dict(timings),
        attempts=list(run.attempts) + (list(diarization.attempts) if diarization else []),
        chunks=[
            {"index": c.index, "start": c.start, "end": c.end, "language": c.language,
             "language_probability": c.language_probability, "seconds": c.seconds, "device": c.device,
             "batch_size": c.batch_size}
            for c in run.chunks
        ],
        source=source,
        options={**output_options(settings), "options_key": options_key(settings)},
    )
