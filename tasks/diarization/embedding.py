"""CAM++ as a pyannote.audio ``Model``: batched Kaldi fbank front-end, mask-weighted pooling.

pyannote calls ``model(waveforms, weights=masks)`` for one (window, speaker) pair at a time;
:meth:`CamPlusPlusEmbedding.embed_windows` does better: the frame features of a window do not depend on
the speaker, so they are computed once per window and pooled once per active speaker.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pyannote.audio import Model

from .campplus import CAMPPlus, weighted_stats

SAMPLE_RATE = 16000
_FRAME = 400  # 25 ms
_SHIFT = 160  # 10 ms
_NFFT = 512
_MIN_FRAMES = 10


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
        self.net = CAMPPlus(feat_dim=80, embedding_size=192)
        if checkpoint:
            self.net.load_checkpoint(checkpoint)
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
        frames = self.net.frames(self.features(waveforms))  # (B, C, T)
        b, s, f = masks.shape
        w = F.interpolate(masks.float().reshape(b * s, 1, f), size=frames.shape[-1], mode="nearest").reshape(b, s, -1)
        c, t = frames.shape[1], frames.shape[2]
        stacked = frames.unsqueeze(1).expand(b, s, c, t).reshape(b * s, c, t)
        emb = self.net.dense(weighted_stats(stacked, w.reshape(b * s, t))).reshape(b, s, -1)
        empty = w.sum(dim=-1) <= 0
        return emb.masked_fill(empty.unsqueeze(-1), math.nan)
