"""Scoring against references: WER with Whisper-style normalisation, DER/JER with pyannote.metrics.

Used by the tests and by ``benchmarks/evaluate.py``; reads RTTM/UEM/plain-text references.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .result import Turn

_PUNCT = re.compile(r"[^\w\s']|_")
_SPACES = re.compile(r"\s+")
_CONTRACTIONS = {"won't": "will not", "can't": "can not", "n't": " not", "'re": " are", "'ll": " will",
                 "'ve": " have", "'m": " am"}


def normalize_text(text: str) -> str:
    """Lower-case, strip accents' combining marks in punctuation, drop punctuation, expand contractions."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"[\[<(][^\]>)]*[\]>)]", " ", text)  # [noise], <unk>, (laughs)
    for short, long in _CONTRACTIONS.items():
        text = text.replace(short, long)
    text = _PUNCT.sub(" ", text).replace("'", " ")
    return _SPACES.sub(" ", text).strip()


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate after :func:`normalize_text` on both sides."""
    import jiwer

    ref, hyp = normalize_text(reference), normalize_text(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return float(jiwer.wer(ref, hyp or "<empty>"))


def read_rttm(path: str | Path) -> list[Turn]:
    turns = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        f = line.split()
        if f and f[0] == "SPEAKER":
            start, dur = float(f[3]), float(f[4])
            turns.append(Turn(start, round(start + dur, 3), f[7]))
    return turns


def read_uem(path: str | Path) -> list[tuple[float, float]] | None:
    path = Path(path)
    if not path.is_file():
        return None
    regions = []
    for line in path.read_text(encoding="utf-8").splitlines():
        f = line.split()
        if len(f) >= 4:
            regions.append((float(f[2]), float(f[3])))
    return regions or None


def annotation(turns: Iterable[Turn], uri: str = "file") -> Any:
    from pyannote.core import Annotation, Segment

    ann = Annotation(uri=uri)
    for i, t in enumerate(turns):
        if t.end > t.start:
            ann[Segment(t.start, t.end), i] = t.speaker
    return ann


def diarization_scores(reference: list[Turn], hypothesis: list[Turn],
                       uem: list[tuple[float, float]] | None = None, collar: float = 0.25) -> dict[str, float]:
    """DER and JER (pyannote.metrics) and the speaker-count error."""
    from pyannote.core import Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate, JaccardErrorRate

    ref, hyp = annotation(reference), annotation(hypothesis)
    timeline = Timeline([Segment(s, e) for s, e in uem]) if uem else None
    der = DiarizationErrorRate(collar=collar)(ref, hyp, uem=timeline)
    jer = JaccardErrorRate(collar=collar)(ref, hyp, uem=timeline)
    return {
        "der": float(der),
        "jer": float(jer),
        "ref_speakers": len(ref.labels()),
        "hyp_speakers": len(hyp.labels()),
        "speaker_count_error": len(hyp.labels()) - len(ref.labels()),
    }
