"""A run's work folder and the moves of the original file: claim, archive, quarantine.

Nothing is ever deleted before its replacement is durable: the original is renamed (same filesystem)
or copied and fsynced before the source goes away; outputs are written atomically before the
original is archived.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError, UnsafeInput
from .files import DIR_MODE, atomic_write_json, ensure_dir, fit_name, fsync_dir


class AlreadyClaimed(InputError):
    """The file is gone from where it was: another run (or scheduler) claimed it first."""

    kind = "already_claimed"


@dataclass
class RunInfo:
    """What the claim step decided for one run (``run.json``); small enough for XCom."""

    run_id: str
    name: str
    stem: str
    work: str
    input: str
    source: str
    sha256: str
    size: int
    out_dir: str
    options_key: str
    options: dict[str, Any] = field(default_factory=dict)
    duplicate_of: dict[str, Any] | None = None
    from_inbox: bool = True
    """Inbox files are moved (and archived after success); other sources are copied and left in place."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Workspace:
    """``<home>/work/<run_id>/``: the one place that knows the run folder's layout.

    input/ (the claimed original), claim.json, run.json, info.json + audio.npy (probe), plan.json, chunks/
    (transcription checkpoints), transcription.json, diarization.json, transcript.json (merge), exports/,
    timings/, failures/, final.json (finalize), speakers.json (names given later), ``<stage>.pid`` and
    ``<stage>.progress`` markers.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @classmethod
    def for_run(cls, work_root: str | Path, run_id: str) -> Workspace:
        return cls(Path(work_root) / run_id)

    def create(self) -> Workspace:
        ensure_dir(self.root / "input")
        return self

    # paths of the stage artefacts
    input_dir = property(lambda self: self.root / "input")
    run_file = property(lambda self: self.root / "run.json")
    claim_file = property(lambda self: self.root / "claim.json")
    audio_file = property(lambda self: self.root / "audio.npy")
    info_file = property(lambda self: self.root / "info.json")
    plan_file = property(lambda self: self.root / "plan.json")
    chunks_dir = property(lambda self: self.root / "chunks")
    transcription_file = property(lambda self: self.root / "transcription.json")
    diarization_file = property(lambda self: self.root / "diarization.json")
    transcript_file = property(lambda self: self.root / "transcript.json")
    exports_dir = property(lambda self: self.root / "exports")
    failures_dir = property(lambda self: self.root / "failures")
    timings_dir = property(lambda self: self.root / "timings")
    final_file = property(lambda self: self.root / "final.json")
    """The run's outcome (finalize): archived, duplicate, partial, quarantined, not_claimed."""
    speakers_file = property(lambda self: self.root / "speakers.json")
    """Speaker names set after the run (the Transcripts view) and who changed what when."""

    @property
    def run_id(self) -> str:
        return self.root.name

    def saved_speaker_names(self) -> dict[str, str]:
        """Speaker names saved in the UI after the run (``speakers.json``), which every later export uses."""
        if not self.speakers_file.is_file():
            return {}
        return dict(self.read(self.speakers_file).get("names") or {})

    def timing_file(self, stage: str) -> Path:
        return self.timings_dir / f"{stage}.json"

    def export_record(self, fmt: str) -> Path:
        """``exports/<fmt>.json``: the files one export format wrote, or why it failed."""
        return self.exports_dir / f"{fmt}.json"

    def pid_file(self, stage: str) -> Path:
        """The process id of the task running ``stage`` (fault tests kill it)."""
        return self.root / f"{stage}.pid"

    def progress_file(self, stage: str) -> Path:
        """The last progress step a long stage reported (e.g. the diarization step)."""
        return self.root / f"{stage}.progress"

    def input_file(self) -> Path | None:
        files = [p for p in self.input_dir.iterdir() if p.is_file() or p.is_symlink()] if self.input_dir.is_dir() \
            else []
        return files[0] if files else None

    def read(self, path: Path) -> Any:
        return json.loads(path.read_text(encoding="utf-8"))

    def run_info(self) -> RunInfo:
        return RunInfo(**self.read(self.run_file))

    def record_failure(self, stage: str, exc: BaseException, try_number: int | None = None) -> None:
        """Keep the reason a stage failed, for the quarantine reason file."""
        kind = getattr(exc, "kind", "error")
        atomic_write_json(
            self.failures_dir / f"{stage}.json",
            {"stage": stage, "error_type": type(exc).__name__, "kind": kind, "message": str(exc)[:2000],
             "try_number": try_number, "at": _now()},
        )

    def failures(self) -> list[dict[str, Any]]:
        if not self.failures_dir.is_dir():
            return []
        return sorted((self.read(p) for p in self.failures_dir.glob("*.json")), key=lambda f: f.get("at", ""))


def _now() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


def check_safe(path: Path, inbox: Path) -> None:
    """Refuse symlinks and paths that leave the inbox (the claim never follows a link)."""
    if path.is_symlink():
        raise UnsafeInput(f"refused: {path.name} is a symbolic link (to {os.readlink(path)})")
    resolved = path.resolve()
    if inbox in path.parents and inbox.resolve() not in resolved.parents:
        raise UnsafeInput(f"refused: {path.name} resolves outside the inbox")


def move_durably(src: Path, dest: Path) -> Path:
    """Rename ``src`` to ``dest`` (no overwrite); across filesystems copy + fsync, then remove the source."""
    ensure_dir(dest.parent)
    dest = unique_path(dest)
    try:
        os.link(src, dest, follow_symlinks=False)  # a symlink is moved as a link, never followed
        os.unlink(src)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK):
            raise
        copy_durably(src, dest)
        os.unlink(src)
    fsync_dir(dest.parent)
    fsync_dir(src.parent)
    return dest


def copy_durably(src: Path, dest: Path) -> Path:
    """Copy with fsync (used for sources outside the inbox, which are never moved)."""
    ensure_dir(dest.parent)
    tmp = dest.with_name(fit_name(f".{dest.name}", ".copying"))
    shutil.copyfile(src, tmp, follow_symlinks=False)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o640)
    os.replace(tmp, dest)
    fsync_dir(dest.parent)
    return dest


def output_stem(stem: str, sha256: str, limit: int = 180) -> str:
    """The stem of output files: the input's, or a shortened one with a hash when very long.

    Leaves room for the longest suffix a writer adds (``.words.csv``) and for ``-<sha8>`` folder names.
    """
    if len(stem.encode()) <= limit:
        return stem
    return fit_name(stem, f"~{sha256[:8]}", limit)


def unique_path(path: Path) -> Path:
    """``path``, or ``name (2).ext``, ``name (3).ext`` … when it exists (always within NAME_MAX bytes)."""
    if not path.exists() and not path.is_symlink():
        return path
    stem, suffix = path.stem, path.suffix
    n = 2
    while True:
        candidate = path.with_name(fit_name(stem, f" ({n}){suffix}"))
        if not candidate.exists() and not candidate.is_symlink():
            return candidate
        n += 1


def claim(source: Path, workspace: Workspace, inbox: Path) -> Path:
    """Take ``source`` into the run's ``input/`` folder, atomically.

    Inbox files are renamed (``link`` + ``unlink`` on one filesystem: exactly one claimant wins; a
    second one sees the file gone and gets AlreadyClaimed). Files elsewhere (an archive being
    backfilled) are copied and never moved. A file already inside this workspace is simply adopted.
    """
    workspace.create()
    if workspace.input_dir in source.parents:
        if not source.exists() and not source.is_symlink():
            raise AlreadyClaimed(f"{source.name} is no longer in the run's work folder")
        return source
    dest = workspace.input_dir / source.name
    if inbox.resolve() == source.parent.resolve() or inbox in source.parents:
        try:
            os.link(source, dest, follow_symlinks=False)
        except FileNotFoundError:
            raise AlreadyClaimed(f"{source.name} is gone from the inbox: claimed by another run") from None
        except FileExistsError:
            pass  # a retry of this claim step after the link was made
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP):
                raise
            return move_durably(source, dest)
        try:
            os.unlink(source)
        except FileNotFoundError:
            pass  # the earlier try of this step already unlinked it
        fsync_dir(dest.parent)
        fsync_dir(source.parent)
        return dest
    if not source.exists():
        raise InputError(f"no such file: {source}")
    return copy_durably(source, dest)


def archive_original(original: Path, archive_root: Path, when: dt.date | None = None) -> Path:
    """Move the processed original to ``archive/YYYY/MM/DD/<name>`` (never overwriting)."""
    day = when or dt.date.today()
    folder = archive_root / f"{day:%Y}" / f"{day:%m}" / f"{day:%d}"
    for parent in (archive_root, folder.parent.parent, folder.parent, folder):
        parent.mkdir(mode=DIR_MODE, exist_ok=True, parents=True)
    dest = move_durably(original, folder / original.name)
    if not dest.is_symlink():
        os.chmod(dest, 0o640)
    return dest


def quarantine_original(original: Path | None, quarantine_root: Path, run_id: str, reason: dict[str, Any]) -> Path:
    """Move the original to ``quarantine/<run_id>/`` with ``reason.json`` beside it; returns the folder."""
    folder = ensure_dir(quarantine_root / run_id)
    atomic_write_json(folder / "reason.json", reason)
    if original is not None and (original.exists() or original.is_symlink()) and original.parent != folder:
        held = move_durably(original, folder / original.name)
        if not held.is_symlink():
            os.chmod(held, 0o640)
    return folder
