"""The watched inbox: which files are candidates, when they are complete, and run ids for them.

Standard library only: the Airflow trigger that watches the inbox imports this in the triggerer.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import time
import unicodedata
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
    later. Either way a file is seen twice, unchanged, before it is taken. An empty file waits twice as
    long (a copy that has not written yet).
    """

    def __init__(self, stable_s: float = 5.0) -> None:
        self.stable_s = stable_s
        self._seen: dict[str, tuple[int, int, int, float]] = {}

    def update(self, candidates: list[Candidate], now: float | None = None,
               wall_ns: int | None = None) -> list[Candidate]:
        """Record the current listing; return the candidates unchanged for at least ``stable_s``.

        ``now``: a monotonic clock (s); ``wall_ns``: the wall clock the mtimes are on (ns).
        """
        now = time.monotonic() if now is None else now
        wall_ns = time.time_ns() if wall_ns is None else wall_ns
        stable, current = [], {}
        for c in candidates:
            known = self._seen.get(c.path)
            if known is None or known[:3] != (c.size, c.mtime_ns, c.ctime_ns):
                age = max(0.0, (wall_ns - c.mtime_ns) / 1e9) if known is None else 0.0
                current[c.path] = (c.size, c.mtime_ns, c.ctime_ns, now - age)
                continue  # seen for the first time, or changed: never taken on this look
            since = known[3]
            current[c.path] = known
            quiet = now - since
            if quiet >= self.stable_s and (c.size > 0 or c.is_symlink or quiet >= 2 * self.stable_s):
                stable.append(c)
        self._seen = current
        return stable


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
