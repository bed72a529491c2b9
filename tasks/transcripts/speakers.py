"""Speaker names given after a run, once for every export: save them, then re-export without transcribing.

``speakers.json`` beside the run's ``transcript.json`` holds the names in effect and every edit (who, when,
what, and the state of its re-export). The transcript JSON itself keeps the original labels; exports show
the names (``ExportOptions.speaker_names``), and two labels given the same name are one person (merged).

:func:`reexport` runs :func:`tasks.stages.export_stage` for each of the run's formats with the run's
settings plus the saved names, into a hidden staging folder inside the output folder; only when every format
succeeded are the files moved over the previous ones (``os.replace``, same file system), so a failed
re-export keeps the previous exports. A lock file in the run folder serialises re-exports of one file.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from ..files import atomic_write_json
from ..options import run_settings
from ..settings import Settings
from ..workspace import RunInfo, Workspace

log = logging.getLogger(__name__)

NAME_MAX_CHARS = 80
STAGING_PREFIX = ".rename-"


class RenameError(ValueError):
    """A rename that cannot be applied (unknown label, bad name); the message says why."""


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_record(ws: Workspace) -> dict[str, Any]:
    """``{"names": {label: name}, "edits": [{at, user, changes, export: {state, dag_run_id, …}}]}``."""
    if not ws.speakers_file.is_file():
        return {"names": {}, "edits": []}
    data = ws.read(ws.speakers_file)
    return {"names": dict(data.get("names") or {}), "edits": list(data.get("edits") or [])}


def saved_names(ws: Workspace) -> dict[str, str]:
    return ws.saved_speaker_names()


def run_names(ws: Workspace, base: Settings) -> dict[str, str]:
    """The names the run was started with (its ``speaker_names`` option)."""
    return dict(run_settings(base, ws.run_info().options).speaker_names)


def effective_names(ws: Workspace, base: Settings) -> dict[str, str]:
    """The run's own names with the names saved later on top."""
    return {**run_names(ws, base), **saved_names(ws)}


def clean_name(value: Any) -> str:
    """A display name: text, whitespace collapsed, no control characters, at most NAME_MAX_CHARS."""
    if not isinstance(value, str):
        raise RenameError(f"a speaker name must be text, not {type(value).__name__}")
    name = " ".join(value.split())
    if any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in name):
        raise RenameError("a speaker name may not contain control characters")
    if len(name) > NAME_MAX_CHARS:
        raise RenameError(f"a speaker name has at most {NAME_MAX_CHARS} characters")
    return name


def labels_of(transcript: Mapping[str, Any]) -> list[str]:
    """Every speaker label of a transcript JSON, in order of first speech."""
    out = list(transcript.get("speakers") or [])
    for seg in transcript.get("segments") or []:
        if seg.get("speaker") and seg["speaker"] not in out:
            out.append(seg["speaker"])
    return out


def apply_changes(current: Mapping[str, str], changes: Mapping[str, Any], labels: list[str]) -> dict[str, str]:
    """The names after ``changes`` (``{"SPEAKER_00": "Diane"}``). A change to another label's name or to
    another label (``{"SPEAKER_02": "SPEAKER_00"}``) merges the two; an empty name gives the label back."""
    if not isinstance(changes, Mapping) or not changes:
        raise RenameError('expected an object of speaker labels to names, e.g. {"SPEAKER_00": "Diane"}')
    unknown = [k for k in changes if k not in labels]
    if unknown:
        raise RenameError(f"unknown speaker label(s) {unknown}; this transcript has {labels}")
    names = {k: v for k, v in current.items() if k in labels}
    cleaned = {label: clean_name(value) for label, value in changes.items()}
    for label, name in cleaned.items():
        if name in labels and name != label:  # merge into another label: take its (new) name
            target = cleaned.get(name) or names.get(name) or name
            name = target
        if name and name != label:
            names[label] = name
        else:
            names.pop(label, None)
    return names


def save_names(ws: Workspace, changes: Mapping[str, Any], user: str | None, base: Settings | None = None
               ) -> dict[str, Any]:
    """Validate and save a rename; returns the new edit (``export.state`` "queued"). Nothing is re-exported
    here: the caller queues :func:`reexport` (the ``securetranscribe_rename`` DAG)."""
    base = base or Settings.from_env()
    if not ws.transcript_file.is_file():
        raise RenameError("this run has no transcript")
    labels = labels_of(ws.read(ws.transcript_file))
    with _locked(ws.root / "speakers.json.lock"):
        record = read_record(ws)
        before = {**run_names(ws, base), **record["names"]}
        after = apply_changes(before, changes, labels)
        edit = {"id": uuid.uuid4().hex[:12], "at": _now(), "user": user or "unknown",
                "changes": {k: {"from": before.get(k, k), "to": after.get(k, k)} for k in changes},
                "export": {"state": "queued"}}
        record["names"] = {label: after.get(label, label) for label in labels}
        record["edits"].append(edit)
        atomic_write_json(ws.speakers_file, record)
    return edit


def pending_edits(ws: Workspace) -> list[str]:
    """The edits whose re-export has not succeeded yet (a re-export applies every name saved so far)."""
    return [e["id"] for e in read_record(ws)["edits"]
            if e.get("export", {}).get("state") in ("queued", "running", "failed")]


def set_export_state(ws: Workspace, edit_ids: list[str], **export: Any) -> None:
    """Record the state of edits' re-export (``state``: queued, running, success, failed; ``dag_run_id``…)."""
    with _locked(ws.root / "speakers.json.lock"):
        record = read_record(ws)
        for edit in record["edits"]:
            if edit.get("id") in edit_ids:
                edit["export"] = {**edit.get("export", {}), **export, "at": _now()}
        atomic_write_json(ws.speakers_file, record)


def _staging_workspace(ws: Workspace, info: RunInfo, names: dict[str, str], staging: Path) -> Workspace:
    """A run folder for the re-export: the run's record with the names and ``staging/out`` as its outputs."""
    shadow = Workspace(staging / "run").create()
    options = {**info.options, "speaker_names": names}
    atomic_write_json(shadow.run_file, {**info.to_dict(), "options": options, "out_dir": str(staging / "out"),
                                        "work": str(shadow.root)})
    shutil.copyfile(ws.transcript_file, shadow.transcript_file)
    if ws.timings_dir.is_dir():
        shutil.copytree(ws.timings_dir, shadow.timings_dir)
    return shadow


def reexport(ws: Workspace, base: Settings | None = None, formats: list[str] | None = None) -> dict[str, Any]:
    """Write every export format of the run again with the effective names; all or nothing."""
    from ..recording import StageHooks
    from ..stages import export_stage

    base = base or Settings.from_env()
    if not ws.transcript_file.is_file() or not ws.run_file.is_file():
        raise RenameError(f"run {ws.run_id} has no transcript to export")
    with _locked(ws.root / "reexport.lock"):  # one re-export of a file at a time
        info = ws.run_info()
        names = effective_names(ws, base)
        formats = formats or list(run_settings(base, info.options).formats)
        out_dir = Path(info.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        staging = out_dir / f"{STAGING_PREFIX}{uuid.uuid4().hex[:8]}"
        try:
            shadow = _staging_workspace(ws, info, names, staging)
            written: list[Path] = []
            for fmt in formats:
                log.info("re-exporting %s of %s with %d speaker name(s)", fmt, info.name, len(names))
                written += [Path(f) for f in export_stage(shadow, fmt, base, hooks=StageHooks())]
            published = []
            for path in written:  # every format succeeded: replace the previous files
                target = out_dir / path.name
                os.replace(path, target)
                published.append(str(target))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return {"run_id": ws.run_id, "formats": formats, "files": published, "names": names}


def apply_rename(run_id: str, dag_run_id: str | None = None, base: Settings | None = None) -> dict[str, Any]:
    """What the rename DAG runs: re-export every format of ``run_id`` with the saved names, update the
    search index's speaker names, and record the outcome on the pending edits (re-raised on failure)."""
    from ..recording import metrics_store
    from .index import TranscriptIndex, display_speakers
    from .runs import run_workspace

    base = base or Settings.from_env()
    ws = run_workspace(base, run_id)
    pending = pending_edits(ws)
    set_export_state(ws, pending, state="running", dag_run_id=dag_run_id, error=None)
    try:
        result = reexport(ws, base)
    except Exception as exc:
        set_export_state(ws, pending, state="failed", error=f"{type(exc).__name__}: {exc}"[:500])
        raise
    store = metrics_store(base)
    if store is not None:
        try:
            TranscriptIndex(store).set_speakers(run_id, display_speakers(ws.read(ws.transcript_file), result["names"]))
        except Exception:  # the index is a convenience: the exports are what counts
            log.warning("could not update the speaker names in the search index", exc_info=True)
    set_export_state(ws, pending, state="success", files=[Path(f).name for f in result["files"]])
    return result
