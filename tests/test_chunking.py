"""Chunk plans on real long audio: contiguous, bounded, cut in silence, deterministic, re-plannable."""

import json

import pytest

from tasks import audio
from tasks.chunking import ChunkPlan, plan_chunks


@pytest.fixture(scope="module")
def long_audio(long_meeting):
    return audio.decode(long_meeting)


@pytest.fixture(scope="module")
def plan(long_audio):
    return plan_chunks(long_audio, target_s=90, min_s=30, max_s=120)


def test_spans_cover_the_file_without_gaps_or_overlaps(plan, long_audio):
    assert plan.spans[0].start == 0.0
    assert plan.spans[-1].end == pytest.approx(len(long_audio) / 16000, abs=1e-3)
    for a, b in zip(plan.spans, plan.spans[1:]):
        assert a.end == b.start
    assert [s.index for s in plan.spans] == list(range(len(plan.spans)))


def test_spans_respect_the_length_bounds(plan):
    assert len(plan.spans) >= 5
    for span in plan.spans[:-1]:
        assert 30 <= span.duration <= 120
    assert plan.spans[-1].duration <= 120


def test_cuts_fall_between_speech_groups(plan):
    for span in plan.spans[:-1]:
        assert not span.hard_cut
        assert span.end in plan.cuts
        sample = span.end * 16000
        assert not any(s < sample < e for s, e in plan.regions), f"cut at {span.end} falls inside speech"


def test_speech_regions_are_assigned_to_exactly_one_span(plan):
    total = sum(r["end"] - r["start"] for span in plan.spans for r in plan.regions_in(span))
    assert total == sum(e - s for s, e in plan.regions)
    assert plan.speech_s > 200


def test_plan_is_deterministic_and_serialisable(plan, long_audio):
    again = plan_chunks(long_audio, target_s=90, min_s=30, max_s=120)
    assert again == plan
    restored = ChunkPlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert restored == plan


def test_replan_with_a_shorter_target_from_a_seam(plan):
    seam = plan.spans[2].start
    smaller = plan.replan(seam, 45.0, first_index=2)
    assert smaller.spans[0].start == seam and smaller.spans[0].index == 2
    assert smaller.spans[-1].end == plan.spans[-1].end
    assert all(s.duration <= 60.0 + 1e-6 for s in smaller.spans)
    assert all(not s.hard_cut for s in smaller.spans[:-1]) or any(s.hard_cut for s in smaller.spans)
    assert len(smaller.spans) > len(plan.spans) - 2
    # same target from the same point reproduces the original remainder exactly
    assert plan.replan(seam, 90.0, first_index=2).spans == plan.spans[2:]


def test_continuous_sound_gets_a_hard_cut_at_the_maximum():
    import numpy as np

    t = np.arange(16000 * 300) / 16000
    tone = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    plan = plan_chunks(tone, target_s=90, min_s=30, max_s=120)
    assert all(s.duration <= 120 for s in plan.spans)
    assert plan.spans[-1].end == 300.0


def test_short_file_is_one_span(jfk):
    plan = plan_chunks(audio.decode(jfk))
    assert len(plan.spans) == 1 and plan.spans[0].end == 11.0
    assert plan.spans[0].has_speech


def test_default_plan_of_a_long_file(long_audio):
    plan = plan_chunks(long_audio)
    assert len(plan.spans) >= 2
    assert all(120 <= s.duration <= 360 for s in plan.spans[:-1])
