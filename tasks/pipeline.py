"""The whole pipeline for one file, as library calls: decode -> plan -> transcribe -> diarize -> merge.

Airflow tasks call the same stage functions one by one; :func:`transcribe_file` runs them in-process.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .audio import AudioInfo, decode, probe
from .checkpoint import ChunkCheckpoint
from .chunking import ChunkPlan, plan_chunks
from .diarization import Diarization, diarize
from .files import sha256_file
from .merge import merge, speaker_order
from .result import Transcript, Turn
from .settings import Settings
from .transcription import TranscriptionRun, transcribe_plan

# Settings that change what comes out: part of the "already processed?" key.
OUTPUT_OPTIONS = (
    "model", "language", "multilingual", "initial_prompt", "hotwords", "beam_size",
    "no_speech_threshold", "diarize", "diarization_pipeline", "num_speakers", "min_speakers", "max_speakers",
)


class StageTimer:
    """Wall time per named stage; ``with timer.stage("decode"): ...``."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t0, 3)


def output_options(settings: Settings) -> dict[str, Any]:
    """The options that determine the output for a given input (JSON-safe)."""
    out = {}
    for name in OUTPUT_OPTIONS:
        value = getattr(settings, name)
        out[name] = str(value) if isinstance(value, Path) else value
    return out


def options_key(settings: Settings) -> str:
    """A short stable hash of :func:`output_options`: same input + same key = same output."""
    blob = json.dumps(output_options(settings), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def source_record(path: Path, info: AudioInfo, sha256: str | None = None) -> dict[str, Any]:
    return {
        "file": path.name,
        "sha256": sha256 or sha256_file(path),
        "size_bytes": info.size_bytes,
        "container": info.container,
        "codec": info.codec,
        "channels": info.channels,
        "sample_rate": info.sample_rate,
    }


def relabel_speakers(turns: list[Turn]) -> dict[str, str]:
    """Map diarization labels to SPEAKER_00, SPEAKER_01 … in order of first speech in the file."""
    order = [t.speaker for t in sorted(turns, key=lambda t: (t.start, t.speaker))]
    mapping: dict[str, str] = {}
    for label in order:
        if label not in mapping:
            mapping[label] = f"SPEAKER_{len(mapping):02d}"
    return mapping


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
    turns, exclusive = [], []
    if diarization is not None:
        mapping = relabel_speakers(diarization.turns)
        turns = [Turn(t.start, t.end, mapping[t.speaker]) for t in diarization.turns]
        exclusive = [Turn(t.start, t.end, mapping[t.speaker]) for t in diarization.exclusive]
    segments = merge(run.segments, exclusive or turns)
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


def transcribe_file(
    path: str | Path,
    settings: Settings | None = None,
    *,
    checkpoint_dir: str | Path | None = None,
    progress: Callable[[float, float, int], None] | None = None,
) -> Transcript:
    """Transcribe and diarize one file in this process; raises the typed errors of :mod:`tasks.errors`."""
    settings = settings or Settings.from_env()
    path = Path(path)
    timer = StageTimer()
    with timer.stage("decode"):
        info = probe(path)
        audio = decode(path, max_duration_s=settings.max_duration_s)
        source = source_record(path, info)
    with timer.stage("plan"):
        plan = make_plan(audio, settings)
    with timer.stage("transcribe"):
        checkpoint = ChunkCheckpoint(checkpoint_dir) if checkpoint_dir else None
        run = transcribe_plan(audio, plan, settings, checkpoint=checkpoint, progress=progress)
    diarization = None
    if settings.diarize and plan.regions:  # no speech found: nothing to diarize
        with timer.stage("diarize"):
            diarization = diarize(audio, settings)
    with timer.stage("merge"):
        transcript = build_transcript(
            duration=len(audio) / 16000, run=run, diarization=diarization, settings=settings, source=source,
            timings=timer.timings,
        )
    transcript.timings = dict(timer.timings)
    return transcript


def make_plan(audio: np.ndarray, settings: Settings) -> ChunkPlan:
    return plan_chunks(audio, settings.chunk_target_s, settings.chunk_min_s, settings.chunk_max_s)
