"""The inbox's completeness rule (tasks/inbox.py:StabilityTracker): when a dropped file is taken.

Pure logic on listings with explicit clocks, plus real files in a folder (mtime/ctime from the file system).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys

import pytest

from tasks.inbox import Candidate, StabilityTracker, WriteWatcher, list_candidates
from tests.conftest import corpus_file

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


def test_a_file_its_writer_closed_is_taken_at_once():
    tracker = StabilityTracker(stable_s=5)
    fresh = Candidate("/inbox/a.wav", 100, WALL, ctime_ns=WALL)
    other = Candidate("/inbox/b.wav", 100, WALL, ctime_ns=WALL)
    assert tracker.update([fresh, other], now=0, wall_ns=WALL, closed={fresh.path}) == [fresh]
    assert tracker.update([fresh, other], now=0.5, wall_ns=WALL + S // 2) == []  # no close seen: the window
    assert tracker.update([fresh, other], now=5, wall_ns=WALL + 5 * S) == [fresh, other]
    # an empty file keeps its double window even when closed (created, not yet written)
    tracker = StabilityTracker(stable_s=5)
    empty = Candidate("/inbox/e.wav", 0, WALL, ctime_ns=WALL)
    assert tracker.update([empty], now=0, wall_ns=WALL, closed={empty.path}) == []
    assert tracker.update([empty], now=5, wall_ns=WALL + 5 * S, closed={empty.path}) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")
def test_the_write_watcher_sees_closes_renames_and_writes_again(tmp_path):
    watcher = WriteWatcher(tmp_path)
    assert watcher.active
    done, part, held = tmp_path / "done.wav", tmp_path / "dl.wav.part", tmp_path / "held.wav"
    done.write_bytes(b"RIFF" * 100)  # open, write, close: finished
    with open(held, "wb") as fh:  # still open for writing
        fh.write(b"RIFF")
        fh.flush()
        assert set(watcher.closed()) == {str(done)}
        fh.write(b"more")
    assert set(watcher.closed()) == {str(done), str(held)}
    with open(done, "ab") as fh:  # written again, not closed yet
        fh.write(b"again")
        fh.flush()
        assert set(watcher.closed()) == {str(held)}
    part.write_bytes(b"RIFF")
    part.rename(tmp_path / "dl.wav")  # a download renamed once complete
    held.unlink()
    assert set(watcher.closed()) == {str(done), str(tmp_path / "dl.wav")}
    watcher.close()
    assert not watcher.active and watcher.closed() == {}
    off = WriteWatcher(tmp_path, enabled=False)  # Settings.inbox_watch_closes off: the window decides
    (tmp_path / "late.wav").write_bytes(b"RIFF")
    assert not off.active and off.closed() == {}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")
def test_closed_since_drops_a_file_written_again_between_two_looks(tmp_path):
    watcher = WriteWatcher(tmp_path)
    (tmp_path / "a.wav").write_bytes(b"RIFF")
    (tmp_path / "b.wav").write_bytes(b"RIFF")
    before = watcher.closed()
    with open(tmp_path / "b.wav", "ab") as fh:  # written again (and closed) while the folder was listed
        fh.write(b"more")
    assert watcher.closed_since(before) == {str(tmp_path / "a.wav")}
    watcher.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")
def test_a_fresh_copy_is_taken_at_the_first_look_after_its_close(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    tracker, watcher = StabilityTracker(stable_s=5), WriteWatcher(inbox)

    def look(now: float) -> list[str]:
        before = watcher.closed()
        listing = list_candidates(inbox)
        return [c.name for c in tracker.update(listing, now=now, closed=watcher.closed_since(before))]

    with open(inbox / "copy.wav", "wb") as fh:
        fh.write(b"RIFF" * 100)
        fh.flush()
        assert look(0) == [] and look(0.5) == []  # still open for writing
    assert look(1.0) == ["copy.wav"]  # closed: 4 s before its window would end
    (inbox / "moved.wav.part").write_bytes(b"RIFF" * 100)
    assert look(1.5) == ["copy.wav"]  # a .part name is never work
    (inbox / "moved.wav.part").rename(inbox / "moved.wav")
    assert look(2.0) == ["copy.wav", "moved.wav"]
    watcher.close()


def _inotify_fds() -> int:
    return sum(os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:inotify" for fd in os.listdir("/proc/self/fd")
               if os.path.exists(f"/proc/self/fd/{fd}"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")
def test_the_inbox_trigger_fires_for_a_copy_once_closed_long_before_its_window(tmp_path):
    """The Airflow trigger itself, with a 10-minute window: only the writer's close can make it fire."""
    from securetranscribe_airflow.inbox import InboxTrigger

    async def scenario():
        watchers = _inotify_fds()
        events = InboxTrigger(str(tmp_path), stable_s=600, poll_s=0.05).run()
        first = asyncio.ensure_future(events.__anext__())
        while _inotify_fds() == watchers:  # the trigger has started watching
            await asyncio.sleep(0.01)
        shutil.copyfile(corpus_file("speech/jfk.flac"), tmp_path / "jfk.flac")
        event = await asyncio.wait_for(first, 60)
        await events.aclose()
        return event

    event = asyncio.run(scenario())
    assert [os.path.basename(f["path"]) for f in event.payload["files"]] == ["jfk.flac"]
    assert event.payload["files"][0]["size"] == os.path.getsize(tmp_path / "jfk.flac")
