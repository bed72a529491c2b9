"""Embedding reuse between overlapping windows (issue 14, part 1): which (window, speaker) pairs are embedded."""

from __future__ import annotations

import numpy as np

from tasks.diarization.reuse import COMPUTE, ReuseRules, plan_reuse

FRAMES, STEP = 100, 10  # frames per window, frames between window starts


def windows(timeline: np.ndarray, num_chunks: int) -> tuple[np.ndarray, np.ndarray]:
    """(C, F, S) activity cut from a file-level (T, S) timeline, windows every STEP frames; their shifts."""
    starts = np.arange(num_chunks) * STEP
    return np.stack([timeline[s: s + FRAMES] for s in starts]), starts


def test_stride_one_embeds_every_active_pair_and_reuses_none():
    timeline = np.zeros((200, 3), bool)
    timeline[20:150, 0] = True
    chunks, starts = windows(timeline, 10)
    plan = plan_reuse(chunks, starts, 1)
    assert np.array_equal(plan.embedded, chunks.any(axis=1))
    assert not plan.reused.any()
    assert (plan.source[~chunks.any(axis=1)] == COMPUTE).all()


def test_a_speaker_seen_the_same_way_by_two_windows_is_embedded_once_per_stride():
    timeline = np.zeros((300, 3), bool)
    timeline[0:200, 0] = True  # one voice all along the first windows
    chunks, starts = windows(timeline, 12)
    plan = plan_reuse(chunks, starts, 3)
    anchors = {0, 3, 6, 9, 11}
    for c in range(12):
        if not chunks[c, :, 0].any():
            continue
        if c in anchors:
            assert plan.embedded[c, 0]
        else:  # its activity on the shared frames is the anchor's: it takes the nearest anchor's embedding
            assert plan.reused[c, 0], c
            a = plan.source[c, 0, 0]
            assert a in anchors and abs(a - c) <= 2 and plan.source[c, 0, 1] == 0
    assert plan.embedded.sum() < chunks.any(axis=1).sum()


def test_local_speaker_slots_are_matched_by_activity_not_by_index():
    """The segmentation's local speaker slots are permuted between windows: the match follows the activity."""
    timeline = np.zeros((200, 2), bool)
    timeline[0:60, 0] = True
    timeline[60:120, 1] = True
    chunks, starts = windows(timeline, 4)
    chunks[1] = chunks[1][:, ::-1]  # window 1 calls the same voices by the other slots
    plan = plan_reuse(chunks, starts, 3)
    assert tuple(plan.source[1, 1]) == (0, 0) and tuple(plan.source[1, 0]) == (0, 1)


def test_a_speaker_whose_speech_lies_mostly_outside_the_shared_frames_is_embedded_itself():
    timeline = np.zeros((200, 2), bool)
    timeline[0:100, 0] = True
    timeline[105:118, 1] = True  # window 1 (frames 10-110) hears 5 frames of it; anchor 3 (30-130) all 13
    chunks, starts = windows(timeline, 4)
    plan = plan_reuse(chunks, starts, 3)
    assert plan.embedded[1, 1]  # anchor 3's embedding is mostly speech window 1 does not hear
    assert plan.reused[2, 1] and tuple(plan.source[2, 1]) == (3, 1)  # window 2 (20-120) hears all of it
    assert plan.reused[1, 0] and tuple(plan.source[1, 0]) == (0, 0)


def test_activities_that_disagree_are_not_reused():
    timeline = np.zeros((200, 2), bool)
    timeline[0:100, 0] = True
    chunks, starts = windows(timeline, 4)
    chunks[1, 40:90, 0] = False  # the segmentation of window 1 sees that voice differently
    plan = plan_reuse(chunks, starts, 3, ReuseRules(min_iou=0.75, min_shared=0.6))
    assert plan.embedded[1, 0]


def test_fill_copies_the_source_embeddings():
    timeline = np.zeros((200, 2), bool)
    timeline[0:150, 0] = True
    chunks, starts = windows(timeline, 6)
    plan = plan_reuse(chunks, starts, 3)
    emb = np.full((6, 2, 4), np.nan)
    for c, s in zip(*np.nonzero(plan.embedded)):
        emb[c, s] = c
    plan.fill(emb)
    for c, s in zip(*np.nonzero(plan.reused)):
        assert (emb[c, s] == plan.source[c, s, 0]).all()
    assert not np.isnan(emb[chunks.any(axis=1)]).any()
