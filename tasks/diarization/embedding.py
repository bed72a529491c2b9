"""CAM++ as a pyannote.audio ``Model``: batched Kaldi fbank front-end, two ways to embed one speaker.

pyannote calls ``model(waveforms, weights=masks)`` for one (window, speaker) pair at a time. Two
batched replacements, chosen by ``DiarizationParams.embedding_pooling``:

- :meth:`CamPlusPlusEmbedding.embed_cropped` ("crop", the default): the network runs on the speaker's
  own active frames only (the fbank of the window is computed once, then cropped per speaker), as if
  the speaker's speech had been cut out of the window. Other voices never reach the network.
- :meth:`CamPlusPlusEmbedding.embed_windows` ("mask"): the network runs once per window on all of it
  and the frame outputs are pooled per speaker with the speaker's activity as weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pyannote.audio import Model

from ..audio import SAMPLE_RATE
from .campplus import CAMPPlus, weighted_stats

_FRAME = 400  # 25 ms
_SHIFT = 160  # 10 ms
_NFFT = 512
_MIN_FRAMES = 10
NETWORK_BATCH = 2
"""10 s inputs per forward pass. Larger batches are no faster on CPU, and their activations (hundreds
of MB) come back from the allocator as fresh pages each time: page faults cost more than the gain."""
CROP_BATCH = 4
"""Crops (at most 10 s, mostly shorter) of one length per forward pass. Measured on CPU (80 crops of 1-10 s,
lengths rounded to 0.5 s): one by one 9.9 s, batches of 2 7.0 s, of 4 6.2 s, of 8 6.1 s."""


def _mel_banks(num_bins: int = 80) -> torch.Tensor:
    from torchaudio.compliance.kaldi import get_mel_banks

    banks, _ = get_mel_banks(num_bins, _NFFT, float(SAMPLE_RATE), 20.0, 0.0, 100.0, -500.0, 1.0)
    return F.pad(banks, (0, 1))  # (num_bins, NFFT/2 + 1)


def kaldi_fbank(waveforms: torch.Tensor, mel_banks: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Log mel filterbank of (B, N) waveforms -> (B, T, 80), as Kaldi computes it (dither 0, snip edges).

    Matches ``torchaudio.compliance.kaldi.fbank(num_mel_bins=80)`` on each row, without the per-row loop.
    """
    frames = waveforms.unfold(-1, _FRAME, _SHIFT)  # (B, T, 400)
    frames = frames - frames.mean(dim=-1, keepdim=True)
    previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
    frames = (frames - 0.97 * previous) * window
    power = torch.fft.rfft(frames, n=_NFFT).abs().pow(2.0)
    mel = torch.matmul(power, mel_banks.T)
    return mel.clamp_min(torch.finfo(mel.dtype).eps).log()


class CamPlusPlusEmbedding(Model):
    """Speaker embedding model (192-d) for pyannote's SpeakerDiarization pipeline."""

    def __init__(self, checkpoint: str | None = None) -> None:
        super().__init__(sample_rate=SAMPLE_RATE, num_channels=1)
        if checkpoint:  # no random initialisation of weights the checkpoint replaces
            with torch.device("meta"):
                self.net = CAMPPlus(feat_dim=80, embedding_size=192)
            self.net.load_checkpoint(checkpoint)
        else:
            self.net = CAMPPlus(feat_dim=80, embedding_size=192)
        self.net.fuse_for_inference()  # inference only: BatchNorms folded into the convolutions
        self.register_buffer("mel_banks", _mel_banks(), persistent=False)
        self.register_buffer("window", torch.hann_window(_FRAME, periodic=False).pow(0.85), persistent=False)
        self.eval()

    @property
    def dimension(self) -> int:
        return 192

    def features(self, waveforms: torch.Tensor) -> torch.Tensor:
        """(B, 1, N) waveforms -> mean-normalised (B, T, 80) fbank."""
        wave = waveforms[:, 0, :] if waveforms.dim() == 3 else waveforms
        if wave.shape[-1] < _FRAME + _SHIFT * (_MIN_FRAMES - 1):
            raise ValueError(f"need at least {_MIN_FRAMES} frames of audio for a speaker embedding")
        feats = kaldi_fbank(wave.float(), self.mel_banks, self.window)
        return feats - feats.mean(dim=1, keepdim=True)

    def forward(self, waveforms: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(self.features(waveforms), weights)

    @torch.inference_mode()
    def embed_windows(self, waveforms: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Embeddings of several speakers per window.

        waveforms: (B, 1, N); masks: (B, S, F) speaker activity at any frame rate.
        Returns (B, S, 192); rows whose mask is empty are NaN.
        """
        feats = self.features(waveforms)
        frames = torch.cat([self.net.frames(feats[i: i + NETWORK_BATCH])
                            for i in range(0, feats.shape[0], NETWORK_BATCH)])  # (B, C, T)
        b, s, f = masks.shape
        w = F.interpolate(masks.float().reshape(b * s, 1, f), size=frames.shape[-1], mode="nearest").reshape(b, s, -1)
        c, t = frames.shape[1], frames.shape[2]
        stacked = frames.unsqueeze(1).expand(b, s, c, t).reshape(b * s, c, t)
        emb = self.net.dense(weighted_stats(stacked, w.reshape(b * s, t))).reshape(b, s, -1)
        empty = w.sum(dim=-1) <= 0
        return emb.masked_fill(empty.unsqueeze(-1), math.nan)

    @torch.inference_mode()
    def crops(self, waveforms: torch.Tensor, masks: torch.Tensor) -> list[tuple[int, int, torch.Tensor]]:
        """Each active speaker's own frames: ``(window, speaker, fbank (T, 80))``, not yet mean-normalised.

        waveforms: (B, 1, N); masks: (B, S, F) speaker activity at any frame rate. Speakers active for fewer
        than 10 fbank frames (0.1 s) have no crop.
        """
        wave = waveforms[:, 0, :] if waveforms.dim() == 3 else waveforms
        feats = kaldi_fbank(wave.float(), self.mel_banks, self.window)  # (B, T, 80)
        b, s, f = masks.shape
        t = feats.shape[1]
        active = F.interpolate(masks.float().reshape(b * s, 1, f), size=t, mode="nearest").reshape(b, s, t) > 0
        out = []
        for i, j in (active.sum(dim=-1) >= _MIN_FRAMES).nonzero().tolist():
            out.append((i, j, feats[i, active[i, j]]))
        return out

    @torch.inference_mode()
    def embed_cropped(self, waveforms: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Embeddings of several speakers per window, each from its own active frames only.

        waveforms: (B, 1, N); masks: (B, S, F) speaker activity at any frame rate.
        Returns (B, S, 192); speakers active for fewer than 10 fbank frames (0.1 s) are NaN.
        Crops of equal length are batched; the others run one by one (padding would change the result:
        CAM++ pools context over the whole input).
        """
        b, s, _ = masks.shape
        out = torch.full((b, s, self.dimension), math.nan, device=waveforms.device)
        batcher = CropBatcher(self)
        for i, j, x in self.crops(waveforms, masks):
            batcher.add((i, j), x)
        for (i, j), e in batcher.flush().items():
            out[i, j] = e
        return out


class CropBatcher:
    """Runs CAM++ on many crops, those of one length together (``batch`` per forward pass).

    Crops (fbank frames) are collected across windows, so that equal lengths meet, and mean-normalised; with
    ``quantum_frames`` > 0 each is first trimmed, equally from both ends, to a multiple of that many frames
    (never below 10), so that crops of nearly equal length share a pass. With 0 every embedding is the
    network's on that crop alone. A group runs as soon as it is full, and every group once ``max_pending``
    crops wait (memory stays bounded on long files); :meth:`flush` runs the rest and returns every embedding.
    """

    def __init__(self, model: CamPlusPlusEmbedding, quantum_frames: int = 0, batch: int = CROP_BATCH,
                 max_pending: int = 256) -> None:
        self.model, self.quantum, self.batch, self.max_pending = model, quantum_frames, max(1, batch), max_pending
        self.pending: dict[int, list[tuple[object, torch.Tensor]]] = {}
        self.waiting = 0
        self.done: dict[object, torch.Tensor] = {}
        self.passes = 0

    def add(self, key: object, crop: torch.Tensor) -> None:
        length = crop.shape[0]
        if self.quantum > 0 and length >= self.quantum:
            keep = max(_MIN_FRAMES, length - length % self.quantum)
            cut = (length - keep) // 2
            crop = crop[cut: cut + keep]
        crop = crop - crop.mean(dim=0, keepdim=True)
        group = self.pending.setdefault(crop.shape[0], [])
        group.append((key, crop))
        self.waiting += 1
        if len(group) >= self.batch:
            self._run(self.pending.pop(crop.shape[0]))
        elif self.waiting >= self.max_pending:
            self._run_pending()

    @torch.inference_mode()
    def _run(self, group: list[tuple[object, torch.Tensor]]) -> None:
        emb = self.model.net(torch.stack([x for _, x in group]))
        self.passes += 1
        self.waiting -= len(group)
        for (key, _), e in zip(group, emb):
            self.done[key] = e

    def _run_pending(self) -> None:
        for group in self.pending.values():
            for k in range(0, len(group), self.batch):
                self._run(group[k: k + self.batch])
        self.pending = {}

    def flush(self) -> dict[object, torch.Tensor]:
        """Every embedding so far, keyed as added (and the batcher emptied)."""
        self._run_pending()
        done, self.done = self.done, {}
        return done


_HOP = 2 * _SHIFT
"""Samples per frame of CAM++'s trunk output (fbank every 10 ms, the first TDNN layer strides by 2)."""


class BlockFrames:
    """CAM++'s frame-level trunk over a whole waveform, computed once in long overlapping blocks.

    ``frames(start, count)`` returns the trunk's output frames (C, count) on the file's 20 ms grid; blocks
    are computed on demand, in order, and frames left behind are dropped, so memory stays at a few blocks
    whatever the file's length. Each block sees ``margin_s`` of audio on either side that it does not keep
    (the trunk's receptive field is about ±1.9 s), and its fbank is mean-normalised over the block.
    """

    def __init__(self, model: CamPlusPlusEmbedding, waveform: torch.Tensor, block_s: float,
                 margin_s: float = 2.0) -> None:
        self.model = model
        self.wave = (waveform[0] if waveform.dim() == 2 else waveform).float()
        self.total = -(-self.wave.shape[-1] // _HOP)  # frames in the file
        self.block = max(1, int(round(block_s * SAMPLE_RATE / _HOP)))
        self.margin = int(round(margin_s * SAMPLE_RATE / _HOP))
        self.start = 0  # first frame held in ``buffer``
        self.buffer: torch.Tensor | None = None
        self.computed = 0  # frames computed so far (from 0)
        self.passes = 0

    def _compute(self, first: int) -> torch.Tensor:
        """Trunk frames [first, first + block) from audio with ``margin`` frames of context each side."""
        last = min(self.total, first + self.block)
        lo, hi = max(0, first - self.margin), min(self.total, last + self.margin)
        piece = self.wave[lo * _HOP: hi * _HOP + _FRAME - _SHIFT]
        need = (hi - lo) * _HOP + _FRAME - _SHIFT
        if piece.shape[-1] < need:  # the file's end: pad so the last frames exist
            piece = F.pad(piece, (0, need - piece.shape[-1]))
        feats = kaldi_fbank(piece.unsqueeze(0).to(self.model.device), self.model.mel_banks, self.model.window)
        feats = feats - feats.mean(dim=1, keepdim=True)
        out = self.model.net.frames(feats)[0]  # (C, ~hi - lo)
        self.passes += 1
        return out[:, first - lo: first - lo + (last - first)]

    def frames(self, start: int, count: int) -> torch.Tensor:
        """Frames [start, start + count) (zeros past the file's end); ``start`` never goes backwards."""
        end = min(start + count, self.total)
        while self.computed < end:
            new = self._compute(self.computed)
            self.buffer = new if self.buffer is None else torch.cat([self.buffer, new], dim=1)
            self.computed += new.shape[1]
        if self.buffer is not None and start > self.start:  # drop what no later window needs
            drop = min(start, self.computed) - self.start
            self.buffer, self.start = self.buffer[:, drop:], self.start + drop
        assert self.buffer is not None
        got = self.buffer[:, start - self.start: end - self.start]
        if got.shape[1] < count:
            got = F.pad(got, (0, count - got.shape[1]))
        return got


@torch.inference_mode()
def embed_from_frames(model: CamPlusPlusEmbedding, frames: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Embeddings of each speaker of one window from the trunk's frames.

    frames: (C, T) trunk output over the window; masks: (S, F) activity at any frame rate.
    Returns (S, 192); speakers active for fewer than 5 trunk frames (0.1 s) are NaN.
    """
    s, f = masks.shape
    t = frames.shape[1]
    w = F.interpolate(masks.float().reshape(s, 1, f), size=t, mode="nearest").reshape(s, t)
    emb = model.net.dense(weighted_stats(frames.unsqueeze(0).expand(s, -1, -1), w))
    return emb.masked_fill((w.sum(dim=-1) < _MIN_FRAMES // 2).unsqueeze(-1), math.nan)
