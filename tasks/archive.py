"""Backfilling an archive: which audio files make up one data interval's partition, and one run per file.

Plain library code (no Airflow import). The archive DAG calls :func:`partition_requests` with its data
interval and starts one ``securetranscribe_process_batch`` run per request. Files of the archive are only
listed and hashed here; the processing run copies them (they are never moved or modified).

Layouts (``Settings.backfill_mode``):

- ``path``: the files of a day are in ``<root>/<pattern>`` (default ``YYYY/MM/DD``) and its subfolders;
- ``mtime``: files anywhere under the root, taken by modification time (flat folders).

Hidden, temporary and partial files (:func:`tasks.inbox.is_ignored`) and files of other types are left
alone; a symbolic link is followed only when its target stays inside the root, others are refused.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .files import sha256_file
from .inbox import is_ignored, safe_token
from .options import options_key, run_conf, run_settings
from .settings import Settings

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class ArchiveFile:
    """One recording of a partition."""

    path: Path
    """The file to process (a symlink's target, which lies inside the root)."""
    relative: str
    """Its place under the root, as listed (the link's own name for a symlink)."""
    partition: str
    """The partition it belongs to: its folder (path mode) or its day (mtime mode)."""
    size: int
    mtime_ns: int


@dataclass
class Partition:
    """What one data interval covers in the archive."""

    root: Path
    labels: list[str]
    files: list[ArchiveFile] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    """(relative path, reason): links leaving the root and other entries never taken."""
    ignored: int = 0
    """Hidden, temporary and non-audio files, not counted as refused."""


def interval_days(start: dt.datetime, end: dt.datetime, timezone: str = "UTC") -> list[dt.date]:
    """The calendar days (in ``timezone``) whose midnight-to-midnight span starts in ``[start, end)``.

    A daily interval gives its one day; a monthly one every day of the month. An interval shorter
    than a day gives the day it starts in.
    """
    tz = zoneinfo.ZoneInfo(timezone)
    first = start.astimezone(tz).date()
    days = [first]
    day = first + dt.timedelta(days=1)
    while dt.datetime.combine(day, dt.time(), tz) < end:
        days.append(day)
        day += dt.timedelta(days=1)
    return days


def partition_folder(pattern: str, day: dt.date) -> str:
    """The pattern's folder for ``day``, e.g. ``2024/03/01``."""
    return pattern.format(year=day.year, month=day.month, day=day.day, date=day)


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _check_root(settings: Settings) -> Path:
    if settings.backfill_root is None:
        raise ValueError("SECURETRANSCRIBE_BACKFILL_ROOT is not set")
    root = Path(settings.backfill_root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"backfill root {root} is not a folder")
    for name, own in (("inbox", settings.inbox), ("work", settings.work), ("outbox", settings.outbox),
                      ("quarantine", settings.quarantine)):
        own = own.resolve()
        if _inside(root, own) or _inside(own, root):
            raise ValueError(f"backfill root {root} overlaps the {name} folder {own}: point it at the archive of "
                             "recordings only")
    return root


def _walk(folder: Path, root: Path, extensions: tuple[str, ...], part: Partition) -> list[tuple[Path, Path]]:
    """(listed path, file to process) for each audio file under ``folder``; folder links are not followed."""
    found: list[tuple[Path, Path]] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        here = Path(dirpath)
        kept = []
        for d in sorted(dirnames):
            if is_ignored(d):
                continue
            if (here / d).is_symlink():
                part.refused.append((str((here / d).relative_to(root)), "symbolic link to a folder (not followed)"))
                continue
            kept.append(d)
        dirnames[:] = kept
        for name in sorted(filenames):
            listed = here / name
            if is_ignored(name) or listed.suffix.lower().lstrip(".") not in extensions:
                part.ignored += 1
                continue
            if listed.is_symlink():
                target = listed.resolve()
                if not _inside(target, root):
                    part.refused.append((str(listed.relative_to(root)), f"symbolic link leaving the archive (to "
                                                                        f"{os.readlink(listed)})"))
                    continue
                if not target.is_file():
                    part.refused.append((str(listed.relative_to(root)), "symbolic link to no file"))
                    continue
                found.append((listed, target))
            elif listed.is_file():
                found.append((listed, listed))
    return found


def list_partition(settings: Settings, start: dt.datetime, end: dt.datetime) -> Partition:
    """The audio files of the data interval ``[start, end)`` under ``settings.backfill_root``."""
    root = _check_root(settings)
    exts = settings.backfill_extensions
    days = interval_days(start, end, settings.backfill_timezone)
    entries: list[tuple[str, Path, Path]] = []  # (partition label, listed, file)
    if settings.backfill_mode == "path":
        labels = list(dict.fromkeys(partition_folder(settings.backfill_pattern, d) for d in days))
        part = Partition(root, labels)
        for label in labels:
            folder = root / label
            if not _inside(folder.resolve(), root):
                part.refused.append((label, "the partition folder is a link leaving the archive"))
                continue
            if not folder.is_dir():
                continue  # no recordings that day
            entries += [(label, listed, f) for listed, f in _walk(folder, root, exts, part)]
    else:
        part = Partition(root, [d.isoformat() for d in days])
        lo, hi = start.timestamp(), end.timestamp()
        tz = zoneinfo.ZoneInfo(settings.backfill_timezone)
        for listed, f in _walk(root, root, exts, part):
            mtime = f.stat().st_mtime
            if lo <= mtime < hi:
                entries.append((dt.datetime.fromtimestamp(mtime, tz).date().isoformat(), listed, f))
    seen: set[Path] = set()
    for label, listed, f in entries:
        if f in seen:  # a link to a file already listed
            continue
        seen.add(f)
        st = f.stat()
        part.files.append(ArchiveFile(f, str(listed.relative_to(root)), label, st.st_size, st.st_mtime_ns))
    return part


def run_options(params: dict[str, Any]) -> dict[str, Any]:
    """The options of an archive run (its params/conf) that its processing runs get: every run option set."""
    return run_conf(params)


def options_key_for(options: dict[str, Any], settings: Settings) -> str:
    """The ledger key the processing run will compute for these options."""
    return options_key(run_settings(settings, options))


def archive_run_id(f: ArchiveFile, sha256: str, options_key: str, nonce: str = "", retry: int = 1) -> str:
    """Deterministic processing run id: the partition, the file name, its content, its options.

    The same file of the same partition with the same options always maps to the same run, so
    starting it again is a no-op; another model or options (or a reprocess ``nonce``) give a new one.
    """
    place = hashlib.sha256(f"{f.relative}|{options_key}|{nonce}".encode()).hexdigest()[:6]
    run_id = f"archive__{safe_token(f.partition, 40)}__{safe_token(Path(f.relative).stem)}__{sha256[:10]}_{place}"
    return run_id if retry <= 1 else f"{run_id}_r{retry}"


def _failed_before(work: Path, run_id: str) -> bool:
    """The run with this id already ended with the file quarantined (see :func:`tasks.finalize.finalize_stage`)."""
    from .workspace import Workspace

    final = Workspace.for_run(work, run_id).final_file
    if not final.is_file():
        return False
    import json

    try:
        return json.loads(final.read_text(encoding="utf-8")).get("outcome") == "quarantined"
    except (OSError, ValueError):
        return False


def partition_requests(settings: Settings, start: dt.datetime, end: dt.datetime, params: dict[str, Any] | None = None,
                       nonce: str = "") -> list[dict[str, Any]]:
    """One trigger request (``trigger_run_id`` + ``conf``) per audio file of the interval's partition.

    ``params``: the archive run's options (every run option of ``tasks.options.RUN_OPTIONS``).
    With ``reprocess`` the run ids carry ``nonce`` (the archive run's id), so every file is processed
    again, once per archive run; without it, a file whose earlier run ended in quarantine gets a
    retry run, and every other file keeps its run id (the ledger skips content already done).
    """
    params = dict(params or {})
    part = list_partition(settings, start, end)
    for relative, reason in part.refused:
        log.warning("archive: refused %s: %s", relative, reason)
    options = run_options(params)
    key = options_key_for(options, settings)
    reprocess = bool(params.get("reprocess"))
    requests = []
    for f in part.files:
        sha = sha256_file(f.path)
        retry = 1
        run_id = archive_run_id(f, sha, key, nonce if reprocess else "")
        while not reprocess and _failed_before(settings.work, run_id):
            retry += 1
            run_id = archive_run_id(f, sha, key, "", retry)
        conf = {"path": str(f.path), "sha256": sha, **options}
        requests.append({"trigger_run_id": run_id, "conf": conf})
    log.info("archive: partition %s: %d file(s), %d ignored, %d refused", ", ".join(part.labels), len(part.files),
             part.ignored, len(part.refused))
    return requests
