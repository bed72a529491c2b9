"""Embed every k-th window; let the windows between take their neighbours' embeddings where provably the same.

pyannote embeds each (window, local speaker) of a 10-s window slid by 1 s: every second of speech is embedded
about ten times per local speaker, which is most of the diarization's time on a crowded meeting. Two windows
1–2 s apart share 80–90 % of their audio; a local speaker of one whose activity on the shared frames is the
activity of a local speaker of the other (and who speaks mostly there) is embedded from nearly the same
frames, so it takes that embedding instead of running CAM++ again. Everything else is embedded as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COMPUTE = -1
"""``ReusePlan.source`` value of a (window, speaker) that is embedded itself."""


@dataclass(frozen=True)
class ReuseRules:
    """When a (window, speaker) takes the embedding of a speaker of a nearby embedded window."""

    min_iou: float = 0.6
    """Their activities on the shared frames: intersection over union at least this."""
    min_shared: float = 0.5
    """Each has at least this share of its own window's activity on the shared frames."""


@dataclass(frozen=True)
class ReusePlan:
    """``source[c, s]`` = (window, speaker) whose embedding (c, s) takes; (c, s) itself when embedded;
    ``COMPUTE`` rows for inactive speakers."""

    source: np.ndarray  # (C, S, 2) int

    @property
    def embedded(self) -> np.ndarray:
        """(C, S) bool: the pairs that are embedded themselves (active and not reused)."""
        c, s = np.indices(self.source.shape[:2])
        return (self.source[..., 0] == c) & (self.source[..., 1] == s)

    @property
    def reused(self) -> np.ndarray:
        """(C, S) bool: the pairs that take another pair's embedding."""
        c, s = np.indices(self.source.shape[:2])
        return (self.source[..., 0] >= 0) & ~((self.source[..., 0] == c) & (self.source[..., 1] == s))

    def fill(self, embeddings: np.ndarray) -> np.ndarray:
        """``embeddings`` (C, S, D) with every reused pair set to its source's embedding (in place)."""
        for c, s in zip(*np.nonzero(self.reused)):
            embeddings[c, s] = embeddings[self.source[c, s, 0], self.source[c, s, 1]]
        return embeddings


def plan_reuse(activity: np.ndarray, shift_frames: np.ndarray, stride: int,
               rules: ReuseRules = ReuseRules()) -> ReusePlan:
    """Which (window, speaker) pairs are embedded and which take a neighbour's embedding.

    ``activity``: (C, F, S) binary segmentation; ``shift_frames[c]``: window c's start in frames;
    ``stride``: every ``stride``-th window (and the last) is embedded whole, the others look for their speakers
    in the nearest embedded windows before and after (1: every window embedded, as pyannote does).
    """
    num_chunks, num_frames, num_speakers = activity.shape
    active = activity.sum(axis=1) > 0  # (C, S)
    source = np.full((num_chunks, num_speakers, 2), COMPUTE, dtype=np.int64)
    anchors = set(range(0, num_chunks, max(1, stride))) | {num_chunks - 1}
    for c in range(num_chunks):
        for s in np.flatnonzero(active[c]):
            source[c, s] = (c, s)
    if stride <= 1:
        return ReusePlan(source)
    for c in range(num_chunks):
        if c in anchors:
            continue
        before = c - c % stride
        after = min(before + stride, num_chunks - 1)
        for a in sorted((before, after), key=lambda x: abs(x - c)):
            offset = int(shift_frames[c] - shift_frames[a])
            if abs(offset) >= num_frames:
                continue
            for s in np.flatnonzero(active[c] & (source[c, :, 0] == c)):
                match = _match(activity[c, :, s], activity[a], offset, active[a], rules)
                if match is not None:
                    source[c, s] = (a, match)
    return ReusePlan(source)


def _match(mine: np.ndarray, theirs: np.ndarray, offset: int, their_active: np.ndarray,
           rules: ReuseRules) -> int | None:
    """The speaker of the other window (``theirs``: (F, S), starting ``offset`` frames before mine) whose
    activity is ``mine`` on the shared frames, or None."""
    n = len(mine)
    if offset >= 0:  # the other window starts earlier: my first frames are its last ones
        x, y = mine[: n - offset] > 0, theirs[offset:] > 0
    else:
        x, y = mine[-offset:] > 0, theirs[: n + offset] > 0
    if x.sum() < rules.min_shared * (mine > 0).sum():
        return None
    for s in np.flatnonzero(their_active):
        both = (x & y[:, s]).sum()
        if both < rules.min_iou * (x | y[:, s]).sum():
            continue
        if y[:, s].sum() >= rules.min_shared * (theirs[:, s] > 0).sum():
            return int(s)
    return None
