"""Word-to-speaker assignment: correctness against a brute-force reference, and regrouping."""

import random

import pytest

from tasks.merge import DEFAULT_SPEAKER, assign_speakers, merge, regroup
from tasks.result import Segment, Turn, Word


def brute_force(word: Word, turns: list[Turn]) -> str:
    overlap: dict[str, float] = {}
    for t in turns:
        shared = min(t.end, word.end) - max(t.start, word.start)
        if shared > 0:
            overlap[t.speaker] = overlap.get(t.speaker, 0.0) + shared
    if overlap:
        return max(overlap.items(), key=lambda kv: (kv[1], kv[0]))[0]
    mid = (word.start + word.end) / 2

    def distance(t):
        return 0.0 if t.start <= mid <= t.end else min(abs(mid - t.start), abs(mid - t.end))

    return min(turns, key=lambda t: (distance(t), t.speaker)).speaker


def test_largest_overlap_wins():
    turns = [Turn(0, 1.0, "A"), Turn(1.0, 3.0, "B")]
    words = [Word(0.2, 0.5, " hi"), Word(0.8, 1.6, " there"), Word(2.0, 2.5, " you")]
    assign_speakers(words, turns)
    assert [w.speaker for w in words] == ["A", "B", "B"]


def test_word_in_a_gap_takes_the_nearest_turn():
    turns = [Turn(0, 1.0, "A"), Turn(5.0, 6.0, "B")]
    words = [Word(1.2, 1.5, " near_a"), Word(4.0, 4.6, " near_b"), Word(9, 9.5, " after")]
    assign_speakers(words, turns)
    assert [w.speaker for w in words] == ["A", "B", "B"]


def test_no_diarization_gives_everyone_the_default_speaker():
    words = [Word(0, 1, " a"), Word(1, 2, " b")]
    assign_speakers(words, [])
    assert {w.speaker for w in words} == {DEFAULT_SPEAKER}


@pytest.mark.parametrize("overlapping", [False, True])
def test_matches_brute_force_on_random_input(overlapping):
    rng = random.Random(7)
    turns, t = [], 0.0
    for _ in range(400):
        start = t + rng.uniform(0, 1.5)
        end = start + rng.uniform(0.2, 6.0)
        turns.append(Turn(round(start, 3), round(end, 3), rng.choice("ABCD")))
        t = start + (rng.uniform(0.1, 3.0) if overlapping else end - start)
    words, t = [], 0.0
    for _ in range(3000):
        start = t + rng.uniform(0, 0.4)
        words.append(Word(round(start, 3), round(start + rng.uniform(0, 0.6), 3), " w"))
        t = start
    expected = [brute_force(w, turns) for w in words]
    assign_speakers(words, turns)
    assert [w.speaker for w in words] == expected


def test_sweep_work_is_linear_in_words_plus_turns():
    """Count turn visits instead of timing: a quadratic loop would visit words x turns."""
    visits = 0

    class CountingTurn(Turn):
        def __getattribute__(self, name):
            nonlocal visits
            if name == "start":
                visits += 1
            return object.__getattribute__(self, name)

    n = 2000
    turns = [CountingTurn(i * 1.0, i * 1.0 + 0.9, "AB"[i % 2]) for i in range(n)]
    words = [Word(i * 0.5, i * 0.5 + 0.3, " w") for i in range(2 * n)]
    visits = 0
    assign_speakers(words, turns)
    assert visits < 10 * (len(words) + len(turns))


def test_regroup_splits_at_speaker_changes_and_rebuilds_text():
    words = [Word(0, 0.5, " Hello", speaker="A"), Word(0.5, 1, " there.", speaker="A"),
             Word(1.2, 1.5, " Hi", speaker="B"), Word(1.5, 2, " back.", speaker="B")]
    segments = regroup([Segment(0, 2, "Hello there. Hi back.", None, words)])
    assert [(s.speaker, s.text, s.start, s.end) for s in segments] == [
        ("A", "Hello there.", 0, 1), ("B", "Hi back.", 1.2, 2)]


def test_merge_keeps_every_word_once():
    words = [Word(i * 0.3, i * 0.3 + 0.25, f" w{i}") for i in range(50)]
    segs = [Segment(0, 7.5, "", None, words[:25]), Segment(7.5, 15, "", None, words[25:])]
    turns = [Turn(0, 4, "A"), Turn(4, 9, "B"), Turn(9, 20, "A")]
    merged = merge(segs, turns)
    flat = [w.text for s in merged for w in s.words]
    assert flat == [w.text for w in words]
    assert all(w.speaker for s in merged for w in s.words)
    assert all(s.speaker == s.words[0].speaker for s in merged)
