"""CAM++ speaker embedding network (3D-Speaker), with mask-weighted statistics pooling.

Architecture adapted from modelscope/3D-Speaker ``speakerlab/models/campplus`` (Apache-2.0); parameter
names match the ``campplus_cn_en_common.pt`` checkpoint. The only change: pooling accepts per-frame
weights, so pyannote can ask for the embedding of one speaker inside a window.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


class _BasicResBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=(stride, 1), padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=(stride, 1), bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu_(out + self.shortcut(x))

    def fuse(self) -> None:
        self.conv1, self.bn1 = _fused(self.conv1, self.bn1)
        self.conv2, self.bn2 = _fused(self.conv2, self.bn2)
        if len(self.shortcut) == 2:
            self.shortcut[0], self.shortcut[1] = _fused(self.shortcut[0], self.shortcut[1])


class _FCM(nn.Module):
    """2-D convolutional front-end over (frequency, time)."""

    def __init__(self, m_channels: int = 32, feat_dim: int = 80) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, m_channels, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(m_channels)
        self.layer1 = nn.Sequential(_BasicResBlock(m_channels, m_channels, 2), _BasicResBlock(m_channels, m_channels))
        self.layer2 = nn.Sequential(_BasicResBlock(m_channels, m_channels, 2), _BasicResBlock(m_channels, m_channels))
        self.conv2 = nn.Conv2d(m_channels, m_channels, 3, stride=(2, 1), padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(m_channels)
        self.out_channels = m_channels * (feat_dim // 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.bn1(self.conv1(x.unsqueeze(1))))
        out = self.layer2(self.layer1(out))
        out = F.relu_(self.bn2(self.conv2(out)))
        b, c, f, t = out.shape
        return out.reshape(b, c * f, t)

    def fuse(self) -> None:
        self.conv1, self.bn1 = _fused(self.conv1, self.bn1)
        self.conv2, self.bn2 = _fused(self.conv2, self.bn2)
        for block in (*self.layer1, *self.layer2):
            block.fuse()


def _fused(conv: nn.Module, bn: nn.Module) -> tuple[nn.Module, nn.Module]:
    """Fold an eval-mode BatchNorm into the convolution before it, in place: (fused conv, Identity).

    Same arithmetic as ``torch.nn.utils.fusion.fuse_conv_bn_eval``, without its deep copy of the conv.
    """
    if isinstance(bn, nn.Identity):
        return conv, bn
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    bias = (bias - bn.running_mean) * scale
    if bn.bias is not None:
        bias = bias + bn.bias
    shape = (-1,) + (1,) * (conv.weight.dim() - 1)
    conv.weight = nn.Parameter(conv.weight.detach() * scale.reshape(shape), requires_grad=False)
    conv.bias = nn.Parameter(bias.detach(), requires_grad=False)
    return conv.eval(), nn.Identity()


def _bn_relu(channels: int) -> nn.Sequential:
    seq = nn.Sequential()
    seq.add_module("batchnorm", nn.BatchNorm1d(channels))
    seq.add_module("relu", nn.ReLU(inplace=True))
    return seq


class _TDNNLayer(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        padding = (kernel - 1) // 2 * dilation
        self.linear = nn.Conv1d(in_ch, out_ch, kernel, stride=stride, padding=padding, dilation=dilation, bias=False)
        self.nonlinear = _bn_relu(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x))

    def fuse(self) -> None:
        self.linear, self.nonlinear.batchnorm = _fused(self.linear, self.nonlinear.batchnorm)


class _CAMLayer(nn.Module):
    """Context-aware masking: a local conv gated by utterance- and segment-level context."""

    def __init__(self, bn_ch: int, out_ch: int, kernel: int, padding: int, dilation: int, reduction: int = 2) -> None:
        super().__init__()
        self.linear_local = nn.Conv1d(bn_ch, out_ch, kernel, padding=padding, dilation=dilation, bias=False)
        self.linear1 = nn.Conv1d(bn_ch, bn_ch // reduction, 1)
        self.relu = nn.ReLU(inplace=True)
        self.linear2 = nn.Conv1d(bn_ch // reduction, out_ch, 1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear_local(x)
        context = x.mean(-1, keepdim=True) + self._seg_pooling(x)
        return y * self.sigmoid(self.linear2(self.relu(self.linear1(context))))

    @staticmethod
    def _seg_pooling(x: torch.Tensor, seg_len: int = 100) -> torch.Tensor:
        seg = F.avg_pool1d(x, kernel_size=seg_len, stride=seg_len, ceil_mode=True)
        shape = seg.shape
        return seg.unsqueeze(-1).expand(*shape, seg_len).reshape(*shape[:-1], -1)[..., : x.shape[-1]]


class _CAMDenseTDNNLayer(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, bn_ch: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.nonlinear1 = _bn_relu(in_ch)
        self.linear1 = nn.Conv1d(in_ch, bn_ch, 1, bias=False)
        self.nonlinear2 = _bn_relu(bn_ch)
        self.cam_layer = _CAMLayer(bn_ch, out_ch, kernel, (kernel - 1) // 2 * dilation, dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cam_layer(self.nonlinear2(self.linear1(self.nonlinear1(x))))

    def fuse(self) -> None:
        self.linear1, self.nonlinear2.batchnorm = _fused(self.linear1, self.nonlinear2.batchnorm)


class _CAMDenseTDNNBlock(nn.ModuleList):
    def __init__(self, num_layers: int, in_ch: int, growth: int, bn_ch: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.growth = growth
        for i in range(num_layers):
            self.add_module(f"tdnnd{i + 1}", _CAMDenseTDNNLayer(in_ch + i * growth, growth, bn_ch, kernel, dilation))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Dense connectivity: each layer sees all earlier outputs (written into one buffer, not re-concatenated)."""
        b, c, t = x.shape
        out = x.new_empty(b, c + len(self) * self.growth, t)
        out[:, :c] = x
        for layer in self:
            out[:, c: c + self.growth] = layer(out[:, :c])
            c += self.growth
        return out


class _TransitLayer(nn.Module):
    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.nonlinear = _bn_relu(in_ch)
        self.linear = nn.Conv1d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.nonlinear(x))


class _DenseLayer(nn.Module):
    """Final projection: 1x1 conv + BatchNorm without affine parameters (3D-Speaker ``batchnorm_``)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.linear = nn.Conv1d(in_ch, out_ch, 1, bias=False)
        self.nonlinear = nn.Sequential()
        self.nonlinear.add_module("batchnorm", nn.BatchNorm1d(out_ch, affine=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x.unsqueeze(-1)).squeeze(-1))

    def fuse(self) -> None:
        self.linear, self.nonlinear.batchnorm = _fused(self.linear, self.nonlinear.batchnorm)


def weighted_stats(x: torch.Tensor, weights: torch.Tensor | None, eps: float = 1e-5) -> torch.Tensor:
    """Mean and standard deviation over time of (B, C, T), weighted by (B, T); uniform when None."""
    if weights is None:
        mean = x.mean(dim=-1)
        std = x.std(dim=-1, unbiased=True) if x.shape[-1] > 1 else torch.zeros_like(mean)
        return torch.cat([mean, std], dim=-1)
    w = weights.unsqueeze(1)  # (B, 1, T)
    total = w.sum(dim=-1).clamp_min(eps)
    mean = (x * w).sum(dim=-1) / total
    var = ((x - mean.unsqueeze(-1)) ** 2 * w).sum(dim=-1) / total
    return torch.cat([mean, var.clamp_min(eps).sqrt()], dim=-1)


class CAMPPlus(nn.Module):
    """CAM++ over (B, T, 80) fbank features, returning (B, embedding_size)."""

    def __init__(self, feat_dim: int = 80, embedding_size: int = 192, growth_rate: int = 32, bn_size: int = 4,
                 init_channels: int = 128) -> None:
        super().__init__()
        self.head = _FCM(feat_dim=feat_dim)
        channels = self.head.out_channels
        self.xvector = nn.Sequential(OrderedDict([("tdnn", _TDNNLayer(channels, init_channels, 5, stride=2))]))
        channels = init_channels
        for i, (num_layers, kernel, dilation) in enumerate([(12, 3, 1), (24, 3, 2), (16, 3, 2)]):
            block = _CAMDenseTDNNBlock(num_layers, channels, growth_rate, bn_size * growth_rate, kernel, dilation)
            self.xvector.add_module(f"block{i + 1}", block)
            channels += num_layers * growth_rate
            self.xvector.add_module(f"transit{i + 1}", _TransitLayer(channels, channels // 2))
            channels //= 2
        self.xvector.add_module("out_nonlinear", _bn_relu(channels))
        self.dense = _DenseLayer(channels * 2, embedding_size)

    def frames(self, feats: torch.Tensor) -> torch.Tensor:
        """Frame-level representation (B, C, T/2) before pooling."""
        return self.xvector(self.head(feats.permute(0, 2, 1)))

    def forward(self, feats: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        frames = self.frames(feats)
        if weights is not None and weights.shape[-1] != frames.shape[-1]:
            weights = F.interpolate(weights.unsqueeze(1), size=frames.shape[-1], mode="nearest").squeeze(1)
        return self.dense(weighted_stats(frames, weights))

    @torch.no_grad()
    def fuse_for_inference(self) -> CAMPPlus:
        """Fold every BatchNorm that directly follows a convolution into it (eval only; same outputs).

        The pre-activation BatchNorms of the dense blocks (BN -> ReLU -> conv) cannot be folded and stay.
        """
        self.eval()
        self.head.fuse()
        for module in self.xvector.children():
            if isinstance(module, _TDNNLayer):
                module.fuse()
            elif isinstance(module, _CAMDenseTDNNBlock):
                for layer in module:
                    layer.fuse()
        last_transit = self.xvector.transit3
        last_transit.linear, self.xvector.out_nonlinear.batchnorm = _fused(
            last_transit.linear, self.xvector.out_nonlinear.batchnorm)
        self.dense.fuse()
        return self

    def load_checkpoint(self, path: str) -> CAMPPlus:
        """Load the 3D-Speaker state dict (its ``xvector.dense.*`` keys map to ``dense.*``)."""
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        state = {k.replace("xvector.dense.", "dense."): v for k, v in state.items()}
        on_meta = next(self.parameters()).is_meta
        self.load_state_dict(state, strict=True, assign=on_meta)  # built on "meta": take the tensors as they are
        return self
