"""The watched inbox: which files are candidates, when they are complete, and run ids for them.

Standard library only: the Airflow trigger that watches the inbox imports this in the triggerer.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import secrets
import struct
import time
import unicodedata
from collections.abc import Collection
from dataclasses import asdict, dataclass
from pathlib import Path

# Names that are never work: hidden files, editor locks, partial downloads and uploads.
_IGNORED_PREFIXES = (".", "~$")
_IGNORED_SUFFIXES = (".part", ".partial", ".crdownload", ".download", ".tmp", ".temp", ".swp", "~", ".lock")
_RUN_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_~+-]+")  # no dots: Airflow refuses ".." in run ids


def is_ignored(name: str) -> bool:
    """Hidden, temporary and partial-download names, which the inbox never takes."""
    low = name.lower()
    return name.startswith(_IGNORED_PREFIXES) or low.endswith(_IGNORED_SUFFIXES)


@dataclass(frozen=True)
class Candidate:
    """A file (or a symlink, to be refused) at the top level of the inbox."""

    path: str
    size: int
    mtime_ns: int
    is_symlink: bool = False
    ctime_ns: int = 0
    """Inode change time: every write changes it, and no writer can set it (unlike the mtime)."""

    @property
    def name(self) -> str:
        return Path(self.path).name

    def to_dict(self) -> dict:
        return asdict(self)


def list_candidates(inbox: str | Path) -> list[Candidate]:
    """Top-level entries of the inbox that could be work, in name order (folders are not descended)."""
    found = []
    try:
        entries = list(os.scandir(inbox))
    except FileNotFoundError:
        return []
    for entry in entries:
        if is_ignored(entry.name):
            continue
        try:
            if entry.is_symlink():
                st = entry.stat(follow_symlinks=False)
                found.append(Candidate(entry.path, st.st_size, st.st_mtime_ns, is_symlink=True,
                                       ctime_ns=st.st_ctime_ns))
            elif entry.is_file(follow_symlinks=False):
                st = entry.stat(follow_symlinks=False)
                found.append(Candidate(entry.path, st.st_size, st.st_mtime_ns, ctime_ns=st.st_ctime_ns))
        except FileNotFoundError:  # vanished while listing
            continue
    return sorted(found, key=lambda c: c.name)


class StabilityTracker:
    """Remembers each candidate's size, mtime and ctime; a file is complete once they stay unchanged.

    A file still being written keeps changing size or ctime (every write changes the ctime, even where a
    copier has set the mtime first), so it is not taken until it has been quiet for ``stable_s`` seconds.
    Quiet since when: since it was first seen, or since its mtime when that is older — a finished
    recording moved into the inbox keeps its mtime and is taken at the second look instead of ``stable_s``
    later; either way it is seen twice, unchanged, before it is taken. A file its writer has closed
    (``closed``: :meth:`WriteWatcher.closed_since`, nothing written since the close) is taken at once. An
    empty file waits twice the window whatever its writer did (a copy that has not written yet).
    """

    def __init__(self, stable_s: float = 5.0) -> None:
        self.stable_s = stable_s
        self._seen: dict[str, tuple[int, int, int, float]] = {}

    def update(self, candidates: list[Candidate], now: float | None = None,
               wall_ns: int | None = None, closed: Collection[str] = ()) -> list[Candidate]:
        """Record the current listing; return the candidates unchanged for at least ``stable_s``, and
        those in ``closed`` (paths whose writer closed them before this listing and has not written since).

        ``now``: a monotonic clock (s); ``wall_ns``: the wall clock the mtimes are on (ns).
        """
        now = time.monotonic() if now is None else now
        wall_ns = time.time_ns() if wall_ns is None else wall_ns
        stable, current = [], {}
        for c in candidates:
            known = self._seen.get(c.path)
            finished = c.path in closed and c.size > 0  # its writer is done: what was listed is the whole file
            if known is None or known[:3] != (c.size, c.mtime_ns, c.ctime_ns):
                age = max(0.0, (wall_ns - c.mtime_ns) / 1e9) if known is None else 0.0
                current[c.path] = (c.size, c.mtime_ns, c.ctime_ns, now - age)
                quiet = float("-inf")  # seen for the first time, or changed: not quiet on this look
            else:
                current[c.path] = known
                quiet = now - known[3]
            if finished or quiet >= (2 * self.stable_s if c.size == 0 and not c.is_symlink else self.stable_s):
                stable.append(c)
        self._seen = current
        return stable


_IN_MODIFY, _IN_CLOSE_WRITE, _IN_MOVED_FROM, _IN_MOVED_TO = 0x2, 0x8, 0x40, 0x80
_IN_CREATE, _IN_DELETE, _IN_Q_OVERFLOW, _IN_IGNORED = 0x100, 0x200, 0x4000, 0x8000
_IN_NONBLOCK, _IN_CLOEXEC = os.O_NONBLOCK, 0o2000000
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then the name)


class WriteWatcher:
    """Which files in a folder their writers have finished with: Linux inotify, standard library only.

    A file is *closed* when the last write event seen for it is a close after writing (``cp``, a recorder,
    Samba on this host) or a rename into the folder (``x.part`` renamed to ``x``); any later write opens it
    again. :meth:`closed_since` says which files were closed before a listing and untouched since, so that
    the listing saw them whole. Only writes made by this host's kernel are seen (not other machines' writes
    to a network share) and only while the watcher runs: where nothing is seen, or inotify is missing (not
    Linux, no watches left), :attr:`active` is false or the file is simply not closed, and the stability
    window decides.
    """

    def __init__(self, folder: str | Path, enabled: bool = True) -> None:
        self.folder = str(folder)
        self._fd = -1
        self._state: dict[str, tuple[bool, int]] = {}  # name -> (closed after its last write, event number)
        self._events = 0
        if not enabled:
            return
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
            if fd < 0:
                return
            mask = _IN_MODIFY | _IN_CLOSE_WRITE | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE
            if libc.inotify_add_watch(fd, os.fsencode(self.folder), mask) < 0:
                os.close(fd)
                return
            self._fd = fd
        except (AttributeError, OSError):  # no inotify here
            self._fd = -1

    @property
    def active(self) -> bool:
        return self._fd >= 0

    def closed(self) -> dict[str, int]:
        """Read the pending events; return the paths (``folder/name``) whose writers have closed them, each
        with the number of its last event."""
        while self._fd >= 0:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                self.close()
                break
            self._apply(data)
        return {os.path.join(self.folder, name): n for name, (done, n) in self._state.items() if done}

    def closed_since(self, before: dict[str, int]) -> set[str]:
        """Paths closed in ``before`` (an earlier :meth:`closed`) with no event since: whole at any time between."""
        return {path for path, n in self.closed().items() if before.get(path) == n}

    def _apply(self, data: bytes) -> None:
        offset = 0
        while offset + _EVENT.size <= len(data):
            _wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
            name = data[offset + _EVENT.size: offset + _EVENT.size + length].rstrip(b"\0")
            offset += _EVENT.size + length
            if mask & _IN_IGNORED:  # the folder is gone: nothing more to watch
                self.close()
                return
            if mask & _IN_Q_OVERFLOW:  # events lost: trust nothing seen so far
                self._state.clear()
                continue
            key = os.fsdecode(name)
            self._events += 1
            if mask & (_IN_DELETE | _IN_MOVED_FROM):
                self._state.pop(key, None)
            elif mask & (_IN_CLOSE_WRITE | _IN_MOVED_TO):
                self._state[key] = (True, self._events)
            elif mask & (_IN_MODIFY | _IN_CREATE):
                self._state[key] = (False, self._events)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._state.clear()


def safe_token(text: str, limit: int = 60) -> str:
    """ASCII-only, run-id-safe version of a file name (``trñ00`` -> ``trn00``, ``a..b`` -> ``a_b``)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    token = _RUN_ID_UNSAFE.sub("_", ascii_text).strip("._-")
    return (token or "file")[:limit]


def run_id_for(candidate: Candidate, sha256: str) -> str:
    """Deterministic run id showing the file name: the same drop always maps to the same run.

    Includes content hash and the drop's size/mtime, so the same content dropped again later is a new
    run (which then finds the earlier result and is recorded as a duplicate).
    """
    drop = hashlib.sha256(f"{candidate.name}|{candidate.size}|{candidate.mtime_ns}".encode()).hexdigest()[:6]
    return f"file__{safe_token(Path(candidate.name).stem)}__{sha256[:10]}_{drop}"


def manual_run_id(path: str, now: float | None = None) -> str:
    """Run id of a run started by hand (trigger form, REST without a run id) for ``path``, named after the
    file like inbox runs: ``file__<name>__manual_<UTC time>_<random>``."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(time.time() if now is None else now))
    return f"file__{safe_token(Path(path).stem)}__manual_{stamp}_{secrets.token_hex(3)}"
