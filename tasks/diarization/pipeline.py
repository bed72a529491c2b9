"""Offline speaker diarization of a whole file with pyannote.audio.

Default stack, all from local files: pyannote/segmentation-3.0 + CAM++ embeddings + agglomerative
clustering. A full pyannote pipeline directory (``SECURETRANSCRIBE_DIARIZATION_PIPELINE``) replaces it.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar

import numpy as np

from .. import model_store
from ..audio import SAMPLE_RATE
from ..devices import cpu_threads, torch_device
from ..errors import GpuOutOfMemory, ShrinkExhausted, as_gpu_oom
from ..oom import ShrinkPolicy, release_gpu_memory
from ..result import Attempt, Turn
from ..settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DiarizationParams:
    """Hyper-parameters of the offline stack, tuned on the visible corpus (docs/benchmarks.md,
    benchmarks/tune_diarization.py)."""

    segmentation_step: float = 0.1
    """Sliding-window step as a share of the 10 s segmentation window (0.1: one window per second)."""
    min_duration_off: float = 0.0
    """Gaps shorter than this inside one speaker's speech are filled."""
    clustering_method: str = "average"
    clustering_threshold: float = 0.5
    """Cosine distance at which agglomerative clustering stops merging. With average linkage the corpus
    is flat from 0.45 to 0.6 (30 s excerpts) and from 0.4 to 0.6 (20-min meeting); 0.65 merges speakers."""
    min_cluster_size: int = 3
    exclude_overlap: bool = True
    """Embed each speaker from the frames where it speaks alone (when there are enough of them)."""
    embedding_pooling: str = "crop"
    """``crop``: CAM++ runs on each speaker's active frames only; ``mask``: once per window, pooled
    with the speaker's activity as weights; ``block``: CAM++'s frame-level trunk runs once over the file (in
    blocks of ``embedding_block_s``) and each (window, speaker) pools its own frames from it: the cost no
    longer grows with the number of speakers per window nor with the windows' overlap."""
    embedding_block_s: float = 60.0
    """``block`` pooling: seconds of audio per pass of the trunk (plus 2 s of context either side)."""
    embedding_stride: int = 1
    """``crop``/``mask`` pooling: every this-many-th window is embedded whole; a speaker of a window between
    takes the embedding of the same local speaker in the nearest embedded window when their activities agree
    on the frames they share (:mod:`tasks.diarization.reuse`), else is embedded itself. 1: every window."""
    reuse_min_iou: float = 0.6
    """Embedding reuse: the two activities' intersection over union on the shared frames, at least."""
    reuse_min_shared: float = 0.5
    """Embedding reuse: the share of each speaker's activity in its window that lies on the shared frames."""
    crop_quantum_s: float = 0.0
    """``crop`` pooling and the second look: each crop is trimmed (equally at both ends) to a multiple of
    this many seconds of frames so that crops of nearly equal length run through CAM++ together
    (:class:`~tasks.diarization.embedding.CropBatcher`); 0: exact crops, batched only when their lengths are
    equal (the embeddings are those of one crop at a time). Measured (docs/benchmarks.md): 0.1-0.25 cut the
    embeddings of a 20-min meeting by a further fifth and keep DER on the 30-s excerpts, the built files and
    the dense meeting, but move the corpus meeting's DER 0.225 → 0.251: not the default."""
    long_file_s: float = 120.0
    """Files at least this long are diarized with the ``long_*`` values below
    (their cost grows with the length; a short file is cheap either way and has few windows to cluster)."""
    long_segmentation_step: float = 0.2
    """``segmentation_step`` of long files: one 10-s window every 2 s (measured: DER 0.290 → 0.258 on the
    dense 20-min meeting, half the segmentation time and half the embeddings)."""
    long_embedding_stride: int = 3
    """``embedding_stride`` of long files."""
    long_split_distance: float = 2.0
    """``split_distance`` of long files: off. Measured at 0.6 (docs/benchmarks.md): DER of the corpus 20-min
    meeting 0.225 → 0.206 and of the dense one 0.251 → 0.236, but the second look then takes 48 s instead of
    5 s on 2 CPU cores (every window of every turn of 3 s or more is embedded), which breaks the bound on the
    diarization's time (1.5 × bare transcription). The setting ``split_long_turns`` sets it to
    ``split_distance`` where DER matters more."""
    min_speaker_s: float = 0.1
    """A speaker with less speech than this in the whole file is dropped (its moments go to the others
    when words are assigned): pyannote's reconstruction can leave a label with a few milliseconds in
    overlapped frames. Never below a speaker count the caller asked for."""
    refine_margin: float = 0.1
    """Second look at whole turns (:mod:`tasks.diarization.refine`): a turn of 1 s or more whose embedding is
    nearer another speaker's turns (within ``clustering_threshold``) than its own speaker's other turns by
    this cosine distance is given to that speaker. Above 1: off. Chosen by leave-one-file-out on the corpus
    excerpts, the pyannote sample and the built files (flat from 0.1 to 0.4; every fold picks 0.1); on the
    held-out dense 20-minute meeting 0.1 is the best of 0.1–0.4 (docs/benchmarks.md)."""
    refine_min_island_s: float = 1.0
    """Second look: turns shorter than this are never moved."""
    split_distance: float = 0.6
    """Second look: an island of ``split_min_s`` or more is cut where the embeddings of its two sides are at least
    this far apart (cosine), the shorter side given a fresh label that joins the nearest speaker within
    ``clustering_threshold`` or stays a new one (:func:`tasks.diarization.refine.find_splits`). Above 1: off.
    Chosen by leave-one-file-out on the corpus excerpts, the pyannote sample and the built files (flat from 0.6
    to 0.75; every fold but dev01's picks 0.6); the two held-out 20-min meetings are best at 0.6 too."""
    split_min_s: float = 3.0
    """Second look: islands shorter than this are never split."""
    regroup_min_turns: int = 2
    """Second look, last: a speaker whose whole turns fall into groups farther apart than
    ``clustering_threshold`` (average linkage) is parted when two groups hold at least this many turns (and 2 s
    of speech) each; 0: off (:func:`tasks.diarization.refine.regroup`). Measured (docs/benchmarks.md): the
    built four-voice file's DER 0.063 → 0.011 (the fourth voice found); no change on the eight AMI excerpts,
    the pyannote sample, the three-voice file and 20 held-out 2-minute pieces of the two 20-min meetings."""
    regroup_lone_distance: float = 0.7
    """Second look, last: a single turn of 2 s or more is parted too when it is at least this far (cosine) from
    *every* other turn of its speaker (a voice heard in one turn between others); 2 or more: off (a cosine
    distance is at most 2). Measured (docs/benchmarks.md, "A voice heard in one turn"): of 33 short files (20
    of them held-out 2-minute pieces) it parts a turn in three, each better (held_out_a's DER 0.176 → 0.130:
    Diane found); parting the lone turns found at 0.46–0.64 made five files of six worse."""
    flicker_margin: float = 0.2
    """Second look, at the very end: a stretch between two pauses made only of pieces shorter than
    ``refine_min_island_s`` of two labels or more (a turn the segmentation could not decide) is embedded whole
    and given to the speaker it is nearest when every other speaker is at least this much farther (cosine);
    2 or more: off (:func:`tasks.diarization.refine.give_flickers`). Measured (docs/benchmarks.md, "A turn the
    segmentation could not decide"): of 33 short files one has such a stretch (held_out_a, DER 0.130 → 0.099,
    its margin 0.30); the other 32 and the two 20-min meetings are identical at every margin from 0 to 0.3."""
    long_regroup_min_turns: int = 0
    """``regroup_min_turns`` of long files: off. Measured at 2: the dense 20-min meeting's DER 0.251 → 0.287
    (16 turns parted into 2 new speakers), the corpus meeting's 0.225 → 0.225."""
    refine_max_embed_s: float = 4.0
    """Second look: at most this much of a turn (its middle) is embedded; bounds its cost on long turns
    (measured: the same moves and DER as 10 s on every file of benchmarks/tune_second_look.py, half the time)."""
    segmentation_batch_size: int = 32
    embedding_batch_size: int = 32

    @property
    def crop_quantum_frames(self) -> int:
        """``crop_quantum_s`` in fbank frames (10 ms)."""
        return int(round(self.crop_quantum_s * 100))

    def for_duration(self, seconds: float) -> DiarizationParams:
        """The parameters a file of this length is diarized with."""
        if seconds < self.long_file_s:
            return self
        return replace(self, segmentation_step=self.long_segmentation_step, embedding_stride=self.long_embedding_stride,
                       split_distance=self.long_split_distance, regroup_min_turns=self.long_regroup_min_turns)

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "segmentation": {"min_duration_off": self.min_duration_off},
            "clustering": {
                "method": self.clustering_method,
                "threshold": self.clustering_threshold,
                "min_cluster_size": self.min_cluster_size,
            },
        }


DEFAULT_PARAMS = DiarizationParams()


@dataclass(frozen=True)
class DiarizationState:
    """How the next diarization try will run, stepped by :class:`~tasks.oom.ShrinkPolicy` after an OOM."""

    batch_fields: ClassVar[tuple[str, ...]] = ("embedding_batch_size", "segmentation_batch_size")
    chunk_s: ClassVar[None] = None
    """No chunk length to shrink: the file is diarized whole."""

    device: str
    embedding_batch_size: int
    segmentation_batch_size: int
    compute_type: str = "float32"
    cpu_fallback: bool = False

    def params(self, params: DiarizationParams) -> DiarizationParams:
        """``params`` with this state's batch sizes."""
        return replace(params, embedding_batch_size=self.embedding_batch_size,
                       segmentation_batch_size=self.segmentation_batch_size)


OOM_POLICY = ShrinkPolicy(min_batch_size=1, cpu_compute_type="float32")
"""Halve both batch sizes down to 1, then CPU (pyannote runs in float32 on either device)."""


@dataclass
class Diarization:
    """Speaker turns of a whole file."""

    turns: list[Turn]
    exclusive: list[Turn]
    speakers: list[str]
    device: str
    timings: dict[str, float] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    embeddings: dict[str, int] = field(default_factory=dict)
    """``embedded``: (window, speaker) pairs run through the embedding model; ``reused``: pairs that took a
    neighbouring window's embedding (empty for a pipeline other than the packaged one)."""
    moved_turns: int = 0
    """Turns the second look gave to another speaker (:mod:`tasks.diarization.refine`)."""
    split_turns: int = 0
    """Turns the second look cut in two where the voice changes (a part that joined no speaker is a new one)."""
    regrouped_turns: int = 0
    """Turns the second look gave to a new speaker parted from theirs (:func:`tasks.diarization.refine.regroup`)."""
    flicker_stretches: int = 0
    """Stretches of short pieces of several labels the second look gave whole to one speaker
    (:func:`tasks.diarization.refine.give_flickers`)."""


def _offline_pipeline_class():
    """Build the pyannote subclass lazily (importing pyannote.audio takes seconds)."""
    from pyannote.audio.core.plda import PLDA
    from pyannote.audio.pipelines import SpeakerDiarization

    from . import reuse as window_reuse
    from .embedding import CamPlusPlusEmbedding, CropBatcher

    class NoPLDA(PLDA):
        """Stands in for the PLDA, which only VBx clustering uses; agglomerative clustering never calls it."""

        def __init__(self) -> None:
            self.lda_dimension = 0

        def __call__(self, embeddings: np.ndarray) -> np.ndarray:
            raise RuntimeError("PLDA is not available offline: use agglomerative clustering")

    class OfflineSpeakerDiarization(SpeakerDiarization):
        """SpeakerDiarization that embeds only active speakers, each window's features computed once."""

        def __init__(self, segmentation: Any, embedding: Any, params: DiarizationParams) -> None:
            super().__init__(
                segmentation=segmentation,
                segmentation_step=params.segmentation_step,
                embedding=embedding,
                embedding_exclude_overlap=params.exclude_overlap,
                plda=NoPLDA(),
                clustering="AgglomerativeClustering",
                embedding_batch_size=params.embedding_batch_size,
                segmentation_batch_size=params.segmentation_batch_size,
            )
            self._windows_model = embedding if isinstance(embedding, CamPlusPlusEmbedding) else None
            self._pooling = params.embedding_pooling
            self._block_s = params.embedding_block_s
            self._stride = params.embedding_stride
            self._quantum_frames = params.crop_quantum_frames
            self._reuse_rules = window_reuse.ReuseRules(params.reuse_min_iou, params.reuse_min_shared)
            if self._pooling not in ("crop", "mask", "block"):
                raise ValueError(f"embedding_pooling must be 'crop', 'mask' or 'block', not {self._pooling!r}")

        def get_embeddings(self, file, binary_segmentations, exclude_overlap=False, hook=None):
            self.embedding_counts = {}
            if self._windows_model is None or self.training:
                return super().get_embeddings(file, binary_segmentations, exclude_overlap, hook)
            return self._window_embeddings(file, binary_segmentations, exclude_overlap, hook)

        def _window_embeddings(self, file, segmentations, exclude_overlap, hook):
            import torch

            data = np.nan_to_num(segmentations.data, nan=0.0).astype(np.float32)  # (C, F, S)
            num_chunks, num_frames, num_speakers = data.shape
            masks = data
            if exclude_overlap:
                clean = data * (data.sum(axis=2, keepdims=True) < 2)
                min_frames = int(np.ceil(num_frames * self._embedding.min_num_samples
                                         / (segmentations.sliding_window.duration * SAMPLE_RATE)))
                enough = clean.sum(axis=1, keepdims=True) > min_frames  # (C, 1, S)
                masks = np.where(enough, clean, data)
            waveform = file["waveform"]
            window = segmentations.sliding_window
            n = int(round(window.duration * SAMPLE_RATE))
            active = np.flatnonzero(data.sum(axis=(1, 2)) > 0)
            out = np.full((num_chunks, num_speakers, self._windows_model.dimension), np.nan, dtype=np.float32)
            if self._pooling == "block":
                return self._block_embeddings(waveform, window, masks, active, out, hook)
            model, device = self._windows_model, self._windows_model.device
            batcher = CropBatcher(model, self._quantum_frames) if self._pooling == "crop" else None
            reuse = window_reuse.plan_reuse(data > 0, np.array([round(window[c].start * num_frames / window.duration)
                                                   for c in range(num_chunks)]), self._stride, self._reuse_rules)
            masks = masks * reuse.embedded[:, None, :]  # a reused speaker is not embedded again
            active = np.flatnonzero(reuse.embedded.any(axis=1))
            self.embedding_counts = {"embedded": int(reuse.embedded.sum()), "reused": int(reuse.reused.sum())}
            batch = max(1, self.embedding_batch_size)
            total = max(1, int(np.ceil(len(active) / batch)))
            if hook is not None:
                hook("embeddings", None, total=total, completed=0)
            for i in range(0, len(active), batch):
                idx = active[i: i + batch]
                starts = [int(round(window[c].start * SAMPLE_RATE)) for c in idx]
                waves = torch.zeros(len(idx), 1, n)
                for j, s in enumerate(starts):
                    piece = waveform[:, s: s + n]
                    waves[j, :, : piece.shape[-1]] = piece
                m = torch.from_numpy(np.ascontiguousarray(masks[idx].transpose(0, 2, 1)))  # (b, S, F)
                if batcher is None:
                    out[idx] = model.embed_windows(waves.to(device), m.to(device)).float().cpu().numpy()
                else:  # crops wait for others of their length, across window batches
                    for j, k, x in model.crops(waves.to(device), m.to(device)):
                        batcher.add((int(idx[j]), k), x)
                if hook is not None:
                    hook("embeddings", None, total=total, completed=i // batch + 1)
            if batcher is not None:
                for (c, k), e in batcher.flush().items():
                    out[c, k] = e.float().cpu().numpy()
            return reuse.fill(out)

        def _block_embeddings(self, waveform, window, masks, active, out, hook):
            """``block`` pooling: one pass of the trunk over the file, each window's speakers pooled from it."""
            import torch

            from .embedding import _HOP, BlockFrames, embed_from_frames

            model = self._windows_model
            trunk = BlockFrames(model, waveform.to(model.device), self._block_s)
            count = int(round(window.duration * SAMPLE_RATE / _HOP))
            step = max(1, len(active) // 20)
            if hook is not None:
                hook("embeddings", None, total=len(active), completed=0)
            with torch.inference_mode():
                for k, c in enumerate(active):
                    start = int(round(window[c].start * SAMPLE_RATE / _HOP))
                    frames = trunk.frames(start, count)
                    emb = embed_from_frames(model, frames, torch.from_numpy(masks[c].T.copy()).to(model.device))
                    out[c] = emb.float().cpu().numpy()
                    if hook is not None and ((k + 1) % step == 0 or k + 1 == len(active)):
                        hook("embeddings", None, total=len(active), completed=k + 1)
            return out

    return OfflineSpeakerDiarization


@functools.lru_cache(maxsize=2)
def load_pipeline(models_dir: str, pipeline_dir: str | None, device: str, params: DiarizationParams) -> Any:
    """The diarization pipeline, loaded once per process for each configuration."""
    import torch
    from pyannote.audio import Model, Pipeline

    t0 = time.perf_counter()
    if pipeline_dir:
        pipeline = Pipeline.from_pretrained(pipeline_dir)
    else:
        from pathlib import Path

        from .embedding import CamPlusPlusEmbedding

        seg_dir = model_store.require(Path(models_dir), "segmentation-3.0")
        emb_dir = model_store.require(Path(models_dir), "campplus")
        segmentation = Model.from_pretrained(str(seg_dir / "pytorch_model.bin"))
        embedding = CamPlusPlusEmbedding(str(emb_dir / "campplus_cn_en_common.pt"))
        pipeline = _offline_pipeline_class()(segmentation, embedding, params)
        pipeline.instantiate(params.hyperparameters())
    pipeline.to(torch.device(device))
    log.info("loaded diarization pipeline on %s in %.1f s", device, time.perf_counter() - t0)
    return pipeline


class _StepTimer:
    """pyannote hook: wall time of each pipeline step (a step ends at its last call)."""

    _NAMES: ClassVar[dict[str, str]] = {"discrete_diarization": "clustering"}

    def __init__(self, on_step: Any = None) -> None:
        self.t0 = time.perf_counter()
        self.last: dict[str, float] = {}
        self.on_step = on_step

    def __call__(self, step_name: str, step_artefact: Any = None, file: Any = None, **kwargs: Any) -> None:
        self.last[step_name] = time.perf_counter()
        if self.on_step is not None:  # batched steps (segmentation, embeddings) also say how far they are
            self.on_step(self._NAMES.get(step_name, step_name), kwargs.get("completed"), kwargs.get("total"))

    def timings(self) -> dict[str, float]:
        out, previous = {}, self.t0
        for name, t in sorted(self.last.items(), key=lambda kv: kv[1]):
            out[self._NAMES.get(name, name)] = round(t - previous, 3)
            previous = t
        return out


def diarize(
    audio: np.ndarray,
    settings: Settings,
    *,
    num_speakers: int | None = None,
    min_speakers: int | None = None,
    max_speakers: int | None = None,
    params: DiarizationParams = DEFAULT_PARAMS,
    on_step: Any = None,
) -> Diarization:
    """Diarize a whole 16 kHz mono waveform; on CUDA OOM halve the batches, then fall back to CPU."""
    import torch

    torch.set_num_threads(cpu_threads(settings.cpu_threads))
    device = torch_device(settings.diarization_device)
    hints = {
        "num_speakers": num_speakers if num_speakers is not None else settings.num_speakers,
        "min_speakers": min_speakers if min_speakers is not None else settings.min_speakers,
        "max_speakers": max_speakers if max_speakers is not None else settings.max_speakers,
    }
    attempts: list[Attempt] = []
    if settings.split_long_turns:
        params = replace(params, long_split_distance=params.split_distance)
    params = params.for_duration(len(audio) / SAMPLE_RATE)
    state = DiarizationState(device, params.embedding_batch_size, params.segmentation_batch_size)
    while True:
        t0 = time.perf_counter()
        params = state.params(params)
        try:
            if settings.fault_oom_diarization and not state.cpu_fallback:
                raise GpuOutOfMemory("injected CUDA out of memory in diarization "
                                     "(SECURETRANSCRIBE_FAULT_OOM_DIARIZATION)", injected=True)
            result = _run(audio, settings, state.device, params, hints, on_step)
        except Exception as exc:
            oom = as_gpu_oom(exc)
            if oom is None:
                raise
            attempts.append(_attempt(state, "oom", time.perf_counter() - t0, str(oom)))
            release_gpu_memory()
            nxt = OOM_POLICY.next(state)
            if nxt is None:
                raise ShrinkExhausted(f"diarization out of memory even on CPU: {oom}") from exc
            if nxt.cpu_fallback:
                log.warning("diarization out of memory: falling back to CPU")
            state = nxt
            continue
        attempts.append(_attempt(state, "ok", time.perf_counter() - t0))
        result.attempts = attempts
        return result


def _run(audio: np.ndarray, settings: Settings, device: str, params: DiarizationParams,
         hints: dict[str, int | None], on_step: Any = None) -> Diarization:
    import torch

    pipeline = load_pipeline(str(settings.models_dir),
                             str(settings.diarization_pipeline) if settings.diarization_pipeline else None,
                             device, params)
    timer = _StepTimer(on_step)
    waveform = torch.from_numpy(np.array(audio, dtype=np.float32)).unsqueeze(0)  # a writable copy of the memmap
    output = pipeline({"waveform": waveform, "sample_rate": SAMPLE_RATE, "uri": "audio"}, hook=timer,
                      **{k: v for k, v in hints.items() if v is not None})
    full = getattr(output, "speaker_diarization", output)
    exclusive = getattr(output, "exclusive_speaker_diarization", full)
    turns, exclusive_turns = _turns(full), _turns(exclusive)
    moves, timings = [], timer.timings()
    embedding = getattr(pipeline, "_windows_model", None)
    if embedding is not None and params.refine_margin <= 1.0:
        t0 = time.perf_counter()
        if on_step is not None:
            on_step("second look")
        turns, exclusive_turns, moves = second_look(audio, turns, exclusive_turns, embedding, params,
                                                    hints.get("num_speakers") or hints.get("max_speakers"))
        timings["second_look"] = round(time.perf_counter() - t0, 3)
    turns, exclusive_turns = _without_phantoms(turns, exclusive_turns, params.min_speaker_s,
                                               hints.get("num_speakers") or hints.get("min_speakers") or 0)
    return Diarization(
        turns=turns,
        exclusive=exclusive_turns,
        speakers=sorted({t.speaker for t in turns}),
        device=device,
        timings=timings,
        params=asdict(params),
        embeddings=dict(getattr(pipeline, "embedding_counts", {})),
        moved_turns=sum(1 for m in moves if m.kind in ("move", "join") and not m.undoes_split),
        split_turns=sum(1 for m in moves if m.kind == "split"),
        regrouped_turns=sum(1 for m in moves if m.kind == "regroup"),
        flicker_stretches=len({(m.start, m.end) for m in moves if m.kind == "flicker"}),
    )


def second_look(audio: np.ndarray, turns: list[Turn], exclusive: list[Turn], model: Any,
                params: DiarizationParams, max_speakers: int | None = None) -> tuple[list[Turn], list[Turn], list[Any]]:
    """Turns holding two voices cut in two, whole turns that sound like another speaker given to that speaker
    (:mod:`tasks.diarization.refine`); no more than ``max_speakers`` speakers come out of it."""
    import torch

    from . import refine
    from .embedding import CropBatcher, kaldi_fbank

    rules = refine.RefineRules.of(params)

    def embed(pieces: list[np.ndarray]) -> np.ndarray:  # == model(piece) each, those of one length batched
        batcher = CropBatcher(model, params.crop_quantum_frames)
        with torch.inference_mode():
            for i, piece in enumerate(pieces):
                wave = torch.from_numpy(np.array(piece, dtype=np.float32))[None].to(model.device)  # a writable copy
                batcher.add(i, kaldi_fbank(wave, model.mel_banks, model.window)[0])
            done = batcher.flush()
        return np.stack([done[i].float().cpu().numpy() for i in range(len(pieces))])

    def crops(spans: list[tuple[float, float]]) -> np.ndarray:
        return embed([audio[int(a * SAMPLE_RATE): int(b * SAMPLE_RATE)] for a, b in spans])

    splits = refine.find_splits(refine.islands(exclusive, rules), crops, rules)
    for m in splits:
        log.info("diarization: %.2f–%.2f s split from %s as %s (cosine distance of the sides %.2f)",
                 m.start, m.end, m.old, m.new, m.own_distance)
    before = turns, exclusive
    turns, exclusive = _moved(turns, exclusive, splits, rules)
    found = refine.islands(exclusive, rules)
    embeddings = refine.embed_islands(found, audio, embed, rules)
    joined = refine.join_fresh(found, embeddings, {m.new for m in splits}, rules, max_speakers)
    if joined:
        turns, exclusive = _moved(turns, exclusive, joined, rules)
    stale = bool(joined)
    if max_speakers and len({t.speaker for t in turns}) > max(max_speakers, len({t.speaker for t in before[0]})):
        log.info("diarization: splits undone (they would give more than %d speakers)", max_speakers)
        (turns, exclusive), splits, joined, stale = before, [], [], True
    if stale:
        found = refine.islands(exclusive, rules)
        embeddings = refine.embed_islands(found, audio, embed, rules)
    moves = refine.plan_moves(found, embeddings, rules)
    for m in joined + moves:
        log.info("diarization: %.2f–%.2f s moved from %s to %s (cosine distance %.2f → %.2f)",
                 m.start, m.end, m.old, m.new, m.own_distance, m.new_distance)
    turns, exclusive = _moved(turns, exclusive, moves, rules)
    room = max_speakers - len({t.speaker for t in turns}) if max_speakers else None
    parted = refine.regroup(found, embeddings, moves, rules, room)
    for m in parted:
        log.info("diarization: %.2f–%.2f s parted from %s as %s (average cosine distance to its other turns %.2f)",
                 m.start, m.end, m.old, m.new, m.own_distance)
    turns, exclusive = _moved(turns, exclusive, parted, rules)
    stretches = refine.flickers(exclusive, rules)
    flicked = refine.give_flickers(stretches, refine.embed_islands(stretches, audio, embed, rules), found,
                                   embeddings, refine.final_labels(found, embeddings, moves + parted), rules)
    for m in flicked:
        log.info("diarization: %.2f–%.2f s (a stretch of short pieces) given from %s to %s (cosine distance "
                 "%.2f → %.2f)", m.start, m.end, m.old, m.new, m.own_distance, m.new_distance)
    turns, exclusive = _moved(turns, exclusive, flicked, rules)
    return turns, exclusive, splits + joined + moves + parted + flicked


def _moved(turns: list[Turn], exclusive: list[Turn], moves: list[Any], rules: Any) -> tuple[list[Turn], list[Turn]]:
    from . import refine

    if not moves:
        return turns, exclusive
    return refine.apply_moves(turns, moves, rules), refine.apply_moves(exclusive, moves, rules)


def _turns(annotation: Any) -> list[Turn]:
    return [
        Turn(start=round(float(seg.start), 3), end=round(float(seg.end), 3), speaker=str(label))
        for seg, _, label in annotation.itertracks(yield_label=True)
    ]


def _without_phantoms(turns: list[Turn], exclusive: list[Turn], min_speaker_s: float,
                      keep_at_least: int) -> tuple[list[Turn], list[Turn]]:
    """Drop speakers with less than ``min_speaker_s`` of speech (keeping the ``keep_at_least`` who speak
    most) and number the rest ``SPEAKER_00``, ``SPEAKER_01`` … in their original order, without gaps."""
    talk: dict[str, float] = {}
    for t in turns:
        talk[t.speaker] = talk.get(t.speaker, 0.0) + (t.end - t.start)
    ranked = sorted(talk, key=lambda s: -talk[s])
    kept = sorted(s for i, s in enumerate(ranked) if talk[s] >= min_speaker_s or i < keep_at_least)
    names = {old: f"SPEAKER_{i:02d}" for i, old in enumerate(kept)}

    def relabel(items: list[Turn]) -> list[Turn]:
        return [Turn(start=t.start, end=t.end, speaker=names[t.speaker]) for t in items if t.speaker in names]

    return relabel(turns), relabel(exclusive)


def _attempt(state: DiarizationState, outcome: str, seconds: float, error: str | None = None) -> Attempt:
    return Attempt(stage="diarize", device=state.device, outcome=outcome, batch_size=state.embedding_batch_size,
                   seconds=round(seconds, 3), error=error, cpu_fallback=state.cpu_fallback)
