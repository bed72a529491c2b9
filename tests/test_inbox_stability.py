"""The inbox's completeness rule (tasks/inbox.py:StabilityTracker): when a dropped file is taken.

Pure logic on listings with explicit clocks, plus real files in a folder (mtime/ctime from the file system).
"""

from __future__ import annotations

import os

from tasks.inbox import Candidate, StabilityTracker, list_candidates

S = 1_000_000_000  # ns per second
WALL = 1_800_000_000 * S  # some wall-clock instant


def test_a_fresh_file_is_taken_once_unchanged_for_the_window():
    tracker = StabilityTracker(stable_s=5)
    fresh = Candidate("/inbox/a.wav", 100, WALL, ctime_ns=WALL)
    assert tracker.update([fresh], now=0, wall_ns=WALL) == []
    assert tracker.update([fresh], now=4.9, wall_ns=WALL + int(4.9 * S)) == []
    assert tracker.update([fresh], now=5.0, wall_ns=WALL + 5 * S) == [fresh]


def test_a_file_still_growing_or_written_is_never_taken():
    tracker = StabilityTracker(stable_s=5)
    for t in range(0, 30, 2):  # a copy: size grows every look
        grows = Candidate("/inbox/a.wav", 100 + t, WALL + t * S, ctime_ns=WALL + t * S)
        assert tracker.update([grows], now=t, wall_ns=WALL + t * S) == []
    # a copier that set an old mtime first (and preallocated the size): the writes still move the ctime
    tracker = StabilityTracker(stable_s=5)
    old = WALL - 3600 * S
    for t in range(0, 30, 2):
        written = Candidate("/inbox/b.wav", 1000, old, ctime_ns=WALL + t * S)
        assert tracker.update([written], now=t, wall_ns=WALL + t * S) == []


def test_a_finished_recording_moved_in_is_taken_at_the_second_look():
    tracker = StabilityTracker(stable_s=5)
    moved = Candidate("/inbox/old.wav", 100, WALL - 3600 * S, ctime_ns=WALL)  # mv keeps the mtime
    assert tracker.update([moved], now=0, wall_ns=WALL) == []  # never on the first look
    assert tracker.update([moved], now=0.5, wall_ns=WALL + S // 2) == [moved]
    # …but an mtime in the future (clock skew) gives no head start
    tracker = StabilityTracker(stable_s=5)
    skewed = Candidate("/inbox/skew.wav", 100, WALL + 3600 * S, ctime_ns=WALL)
    assert tracker.update([skewed], now=0, wall_ns=WALL) == []
    assert tracker.update([skewed], now=0.5, wall_ns=WALL + S // 2) == []


def test_an_empty_file_waits_twice_as_long():
    tracker = StabilityTracker(stable_s=5)
    empty = Candidate("/inbox/e.wav", 0, WALL - 3600 * S, ctime_ns=WALL)
    assert tracker.update([empty], now=0, wall_ns=WALL) == []
    assert tracker.update([empty], now=5, wall_ns=WALL + 5 * S) == [empty]  # its mtime is an hour old
    tracker = StabilityTracker(stable_s=5)
    new_empty = Candidate("/inbox/n.wav", 0, WALL, ctime_ns=WALL)
    assert tracker.update([new_empty], now=0, wall_ns=WALL) == []
    assert tracker.update([new_empty], now=9, wall_ns=WALL + 9 * S) == []
    assert tracker.update([new_empty], now=10, wall_ns=WALL + 10 * S) == [new_empty]


def test_real_files_moved_in_and_written_in_place(tmp_path):
    inbox, outside = tmp_path / "inbox", tmp_path / "recordings"
    inbox.mkdir()
    outside.mkdir()
    (outside / "old.wav").write_bytes(b"RIFF" * 100)
    hour_ago = os.stat(outside / "old.wav").st_mtime_ns - 3600 * S
    os.utime(outside / "old.wav", ns=(hour_ago, hour_ago))
    os.rename(outside / "old.wav", inbox / "old.wav")
    (inbox / "new.wav").write_bytes(b"RIFF" * 100)

    tracker = StabilityTracker(stable_s=5)
    assert tracker.update(list_candidates(inbox), now=0) == []
    taken = tracker.update(list_candidates(inbox), now=0.5)
    assert [c.name for c in taken] == ["old.wav"]  # the fresh one waits for its window
    with open(inbox / "new.wav", "ab") as fh:  # still being written: its ctime moves
        fh.write(b"more")
    assert [c.name for c in tracker.update(list_candidates(inbox), now=6)] == ["old.wav"]
