"""Scoring against references: WER (Whisper-style normalisation), speaker-attributed WER, DER/JER.

Used by the tests and by ``benchmarks/evaluate.py``. Reads RTTM, UEM, STM and plain-text references.

- :func:`normalize_text` follows the rules of OpenAI Whisper's ``EnglishTextNormalizer`` (MIT): brackets
  and fillers removed, contractions and titles expanded, spelled-out numbers written as digits,
  punctuation and diacritics removed. Not included: its British-to-American spelling table.
- :func:`cp_wer` is the concatenated minimum-permutation WER of CHiME-6: each speaker's words are joined
  in time order and the speaker mapping that gives the fewest errors is chosen.
- :func:`diarization_scores` uses pyannote.metrics (DER, JER) with a collar and an optional UEM.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .result import Turn

# -- text normalisation -------------------------------------------------------------------------------
_FILLERS = re.compile(r"\b(hmm+|mm+|mhm|uh+|um+|erm|er|ah)\b")
_BRACKETS = re.compile(r"[<\[][^>\]]*[>\]]|\([^)]*\)")
_REPLACERS: tuple[tuple[str, str], ...] = (
    # common contractions (Whisper's list)
    (r"\bwon't\b", "will not"), (r"\bcan't\b", "can not"), (r"\blet's\b", "let us"), (r"\bain't\b", "aint"),
    (r"\by'all\b", "you all"), (r"\bwanna\b", "want to"), (r"\bgotta\b", "got to"), (r"\bgonna\b", "going to"),
    (r"\bi'ma\b", "i am going to"), (r"\bimma\b", "i am going to"), (r"\bwoulda\b", "would have"),
    (r"\bcoulda\b", "could have"), (r"\bshoulda\b", "should have"), (r"\bma'am\b", "madam"),
    # titles before names
    (r"\bmr\b", "mister "), (r"\bmrs\b", "missus "), (r"\bst\b", "saint "), (r"\bdr\b", "doctor "),
    (r"\bprof\b", "professor "), (r"\bcapt\b", "captain "), (r"\bgov\b", "governor "), (r"\bsen\b", "senator "),
    (r"\brep\b", "representative "), (r"\bpres\b", "president "), (r"\brev\b", "reverend "),
    (r"\bjr\b", "junior "), (r"\bsr\b", "senior "),
    # perfect tenses and other 's / 'd ambiguities
    (r"'d been\b", " had been"), (r"'s been\b", " has been"), (r"'d gone\b", " had gone"),
    (r"'s gone\b", " has gone"), (r"'d done\b", " had done"), (r"'s got\b", " has got"),
    # general contractions
    (r"n't\b", " not"), (r"'re\b", " are"), (r"'s\b", " is"), (r"'d\b", " would"), (r"'ll\b", " will"),
    (r"'t\b", " not"), (r"'ve\b", " have"), (r"'m\b", " am"),
)
_REPLACERS_RE = tuple((re.compile(p), r) for p, r in _REPLACERS)
_KEEP_SYMBOLS = ".%$¢€£"

_ONES = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen".split())}
_TENS = {w: 10 * (i + 2) for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9}
_ORDINALS = {"first": "one", "second": "two", "third": "three", "fifth": "five", "eighth": "eight",
             "ninth": "nine", "twelfth": "twelve"}


def _symbols_to_spaces(text: str) -> str:
    """Drop combining marks; replace marks, symbols and punctuation with spaces (Whisper's rule)."""
    out = []
    for char in unicodedata.normalize("NFKD", text):
        category = unicodedata.category(char)
        if category == "Mn":
            continue
        out.append(" " if category[0] in "MSP" and char not in _KEEP_SYMBOLS else char)
    return "".join(out)


def _ordinal_base(word: str) -> tuple[str, str] | None:
    """``twenty-first`` parts: ("one", "st"); ``fourth`` -> ("four", "th"); None if not an ordinal."""
    if word in _ORDINALS:
        suffix = {"first": "st", "second": "nd", "third": "rd"}.get(word, "th")
        return _ORDINALS[word], suffix
    if word.endswith("ieth") and word[:-4] + "y" in _TENS:
        return word[:-4] + "y", "th"
    if word.endswith("th") and (word[:-2] in _ONES or word[:-2] in _SCALES):
        return word[:-2], "th"
    return None


def _number_kind(word: str) -> tuple[str, int] | None:
    if word in _ONES:
        value = _ONES[word]
        return ("one" if value < 10 else "teen"), value
    if word in _TENS:
        return "ten", _TENS[word]
    if word in _SCALES:
        return ("hundred" if word == "hundred" else "scale"), _SCALES[word]
    return None


_FOLLOWS = {"one": {None, "ten", "hundred", "scale"}, "teen": {None, "hundred", "scale"},
            "ten": {None, "hundred", "scale"}, "hundred": {"one", "teen"}, "scale": {"one", "teen", "ten", "hundred"}}


def _numbers_to_digits(words: list[str]) -> list[str]:
    """Spelled-out cardinals and ordinals become digits: ``one hundred and five`` -> ``105``."""
    out: list[str] = []
    i = 0
    while i < len(words):
        total, current, last, suffix, j = 0, 0, None, "", i
        while j < len(words):
            ordinal = _ordinal_base(words[j])
            kind = _number_kind(ordinal[0] if ordinal else words[j])
            if kind is None:
                nxt = _number_kind(words[j + 1]) if j + 1 < len(words) else None
                if words[j] == "and" and last in {"hundred", "scale"} and nxt and nxt[0] in {"one", "teen", "ten"}:
                    j += 1
                    continue
                break
            name, value = kind
            if last not in _FOLLOWS[name] or (name == "one" and value == 0 and last is not None):
                break
            if name == "hundred":
                current *= 100
            elif name == "scale":
                total, current = total + current * value, 0
            else:
                current += value
            last, j = name, j + 1
            if ordinal:
                suffix = ordinal[1]
                break
        if last is None:
            out.append(words[i])
            i += 1
        else:
            out.append(f"{total + current}{suffix}")
            i = j
    return out


def normalize_text(text: str) -> str:
    """Whisper-style English normalisation used on both sides before WER."""
    text = unicodedata.normalize("NFKC", text).lower().replace("’", "'")
    text = _BRACKETS.sub(" ", text)
    text = _FILLERS.sub(" ", text)
    text = re.sub(r"\s+'", "'", text)
    for pattern, replacement in _REPLACERS_RE:
        text = pattern.sub(replacement, text)
    text = re.sub(r"(\d),(\d)", r"\1\2", text)
    text = re.sub(r"\.([^0-9]|$)", r" \1", text)
    text = _symbols_to_spaces(text).replace("-", " ")
    text = re.sub(r"(\d)\s*percent\b", r"\1%", text)
    words = _numbers_to_digits(text.split())
    text = " ".join(words)
    text = re.sub(r"\bpercent\b", "%", text)
    text = re.sub(r"(\d+) %", r"\1%", text)
    text = re.sub(r"[.$¢€£]([^0-9]|$)", r" \1", text)
    text = re.sub(r"([^0-9])%", r"\1 ", text)
    return re.sub(r"\s+", " ", text).strip()


# -- word error rates ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class WordErrors:
    """Edit operations between a reference and a hypothesis (after normalisation)."""

    substitutions: int
    deletions: int
    insertions: int
    reference_words: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        if self.reference_words == 0:
            return 0.0 if self.insertions == 0 else 1.0
        return self.errors / self.reference_words


def word_errors(reference: str, hypothesis: str) -> WordErrors:
    """Substitutions, deletions and insertions after :func:`normalize_text` on both sides."""
    ref, hyp = normalize_text(reference), normalize_text(hypothesis)
    if not ref or not hyp:
        return WordErrors(0, len(ref.split()), len(hyp.split()), len(ref.split()))
    import jiwer

    out = jiwer.process_words(ref, hyp)
    return WordErrors(out.substitutions, out.deletions, out.insertions, len(ref.split()))


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate after :func:`normalize_text` on both sides."""
    return word_errors(reference, hypothesis).rate


def cp_wer(reference: Mapping[str, str], hypothesis: Mapping[str, str]) -> dict[str, Any]:
    """Concatenated minimum-permutation WER: speaker-attributed, label names do not matter.

    ``reference`` and ``hypothesis`` map each speaker to all of its words in time order. Unmatched
    reference speakers count as deletions, unmatched hypothesis speakers as insertions.
    """
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    refs, hyps = list(reference), list(hypothesis)
    n = max(len(refs), len(hyps))
    cost = np.zeros((n, n), dtype=np.int64)
    for i in range(n):
        for j in range(n):
            r = reference[refs[i]] if i < len(refs) else ""
            h = hypothesis[hyps[j]] if j < len(hyps) else ""
            cost[i, j] = word_errors(r, h).errors
    rows, cols = linear_sum_assignment(cost)
    errors = int(cost[rows, cols].sum())
    ref_words = sum(len(normalize_text(t).split()) for t in reference.values())
    mapping = {refs[i]: hyps[j] for i, j in zip(rows, cols) if i < len(refs) and j < len(hyps)}
    return {"cpwer": errors / ref_words if ref_words else float(errors > 0), "errors": errors,
            "reference_words": ref_words, "mapping": mapping}


# -- reference files -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Utterance:
    """One line of a speaker-attributed reference transcript (STM)."""

    speaker: str
    start: float
    end: float
    text: str


def read_stm(path: str | Path) -> list[Utterance]:
    """``file channel speaker start end [<label>] text`` lines; comments and ignored segments skipped."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith(";;"):
            continue
        f = line.split(maxsplit=5)
        if len(f) < 5 or f[2].lower() in {"inter_segment_gap", "excluded_region"}:
            continue
        text = f[5] if len(f) > 5 else ""
        if text.startswith("<"):
            text = text.split(">", 1)[1] if ">" in text else ""
        if "ignore_time_segment_in_scoring" in text.lower():
            continue
        out.append(Utterance(f[2], float(f[3]), float(f[4]), text.strip()))
    return sorted(out, key=lambda u: u.start)


def read_text_reference(path: str | Path) -> tuple[str, dict[str, str] | None]:
    """A ``.txt`` reference: the whole text, and per-speaker text when every line is ``label<TAB>text``."""
    lines = [ln for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln.strip()]
    if lines and all("\t" in ln for ln in lines):
        speakers: dict[str, str] = {}
        for ln in lines:
            label, text = ln.split("\t", 1)
            speakers[label.strip()] = (speakers.get(label.strip(), "") + " " + text.strip()).strip()
        return " ".join(speakers.values()), speakers
    return " ".join(ln.strip() for ln in lines), None


def speaker_texts(utterances: Iterable[Utterance]) -> dict[str, str]:
    """Each speaker's words joined in time order."""
    out: dict[str, list[str]] = {}
    for u in sorted(utterances, key=lambda u: u.start):
        out.setdefault(u.speaker, []).append(u.text)
    return {k: " ".join(v) for k, v in out.items()}


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


# -- diarization ---------------------------------------------------------------------------------------
def annotation(turns: Iterable[Turn], uri: str = "file") -> Any:
    from pyannote.core import Annotation, Segment

    ann = Annotation(uri=uri)
    for i, t in enumerate(turns):
        if t.end > t.start:
            ann[Segment(t.start, t.end), i] = t.speaker
    return ann


def diarization_scores(reference: list[Turn], hypothesis: list[Turn],
                       uem: list[tuple[float, float]] | None = None, collar: float = 0.25) -> dict[str, float]:
    """DER and JER (pyannote.metrics) and the speaker-count error.

    Without a UEM, pyannote scores the union of the reference and hypothesis extents.
    """
    import warnings

    from pyannote.core import Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate, JaccardErrorRate

    ref, hyp = annotation(reference), annotation(hypothesis)
    timeline = Timeline([Segment(s, e) for s, e in uem]) if uem else None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*'uem' was approximated.*")
        der_metric = DiarizationErrorRate(collar=collar)
        der = der_metric(ref, hyp, uem=timeline, detailed=True)
        jer = JaccardErrorRate(collar=collar)(ref, hyp, uem=timeline)
    total = der["total"] or 1.0
    return {
        "der": float(der["diarization error rate"]),
        "jer": float(jer),
        "missed": float(der["missed detection"] / total),
        "false_alarm": float(der["false alarm"] / total),
        "confusion": float(der["confusion"] / total),
        "ref_speakers": len(ref.labels()),
        "hyp_speakers": len(hyp.labels()),
        "speaker_count_error": len(hyp.labels()) - len(ref.labels()),
    }
