"""A run as the Transcripts view sees it, from the run's own records only.

Every path comes from the records the pipeline wrote (``run.json``, ``final.json``, the export records),
never from a request: a run id names a folder directly under ``work/`` (no separators, no dot names, no
symbolic links), the audio is the ``archived`` original of a run that succeeded and must lie inside
``archive/``, and an export is a plain file of the run's own output folder inside ``outbox/``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..recording import stage_timings
from ..settings import Settings
from ..workspace import Workspace

RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:+~@=-]{0,249}")
"""What an Airflow run id of ours looks like (``file__jfk__3f2a…``, ``manual__2026-11-30T10:00:00+00:00``)."""


class NotFound(LookupError):
    """No such run, file or export (also for anything refused: the API answers 404 either way)."""


def run_workspace(settings: Settings, run_id: str) -> Workspace:
    """The run folder ``work/<run_id>/``; NotFound for ids that are not plain names or not a real folder."""
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id) or ".." in run_id:
        raise NotFound(run_id)
    root = settings.work.resolve()
    folder = root / run_id
    if folder.is_symlink() or not folder.is_dir() or folder.resolve().parent != root:
        raise NotFound(run_id)
    return Workspace(folder)


def _inside(path: Path, root: Path) -> Path:
    """``path`` when it is a regular file (not a link) inside ``root``; NotFound otherwise."""
    if path.is_symlink():
        raise NotFound(str(path))
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()) or not resolved.is_file():
        raise NotFound(str(path))
    if any(part.startswith(".") for part in resolved.relative_to(root.resolve()).parts):
        raise NotFound(str(path))
    return resolved


def final_record(ws: Workspace) -> dict[str, Any] | None:
    try:
        return ws.read(ws.final_file) if ws.final_file.is_file() else None
    except (OSError, ValueError):
        return None


def archived_audio(settings: Settings, ws: Workspace) -> Path:
    """The archived original of a run that succeeded (``final.json``: outcome archived); NotFound else."""
    final = final_record(ws)
    if not final or final.get("outcome") != "archived" or not final.get("archived"):
        raise NotFound("no archived original")
    return _inside(Path(final["archived"]), settings.archive)


def out_dir(settings: Settings, ws: Workspace) -> Path | None:
    """The run's output folder when it lies inside the outbox."""
    if not ws.run_file.is_file():
        return None
    folder = Path(ws.run_info().out_dir)
    if folder.is_symlink() or not folder.is_dir() or not folder.resolve().is_relative_to(settings.outbox.resolve()):
        return None
    return folder


def export_files(settings: Settings, ws: Workspace) -> list[str]:
    """The names of the run's export files (what its export records list and still exists)."""
    folder = out_dir(settings, ws)
    if folder is None or not ws.exports_dir.is_dir():
        return []
    names: list[str] = []
    for record in sorted(ws.exports_dir.glob("*.json")):
        try:
            data = ws.read(record)
        except (OSError, ValueError):
            continue
        for f in data.get("files", []) if data.get("ok") else []:
            name = Path(f).name
            try:
                _inside(folder / name, settings.outbox)
            except NotFound:
                continue
            if name not in names:
                names.append(name)
    return names


def export_file(settings: Settings, ws: Workspace, name: str) -> Path:
    """One export file of the run by name; NotFound for anything else."""
    if name not in export_files(settings, ws):
        raise NotFound(name)
    folder = out_dir(settings, ws)
    assert folder is not None
    return _inside(folder / name, settings.outbox)


def transcript(ws: Workspace) -> dict[str, Any]:
    if not ws.transcript_file.is_file():
        raise NotFound("no transcript")
    return json.loads(ws.transcript_file.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Progress:
    """Where a run in progress is: the stages running now, with a step or chunk count when known."""

    stages: list[str]
    detail: str

    def text(self) -> str:
        return " · ".join(filter(None, [", ".join(self.stages), self.detail])) or "queued"


def progress(ws: Workspace, running: list[str]) -> Progress:
    """From the run folder: chunks transcribed of the plan's, the last progress step of each running stage."""
    details = []
    for stage in running:
        if stage == "transcribe" and ws.plan_file.is_file():
            try:
                total = len(ws.read(ws.plan_file).get("spans", []))
            except (OSError, ValueError):
                total = 0
            done = len(list(ws.chunks_dir.glob("chunk-*.json"))) if ws.chunks_dir.is_dir() else 0
            if total:
                details.append(f"chunk {min(done + 1, total)}/{total}")
        marker = ws.progress_file(stage)
        if marker.is_file():
            try:
                step = " ".join(marker.read_text(encoding="utf-8", errors="replace").split())[:120]
            except OSError:
                step = ""
            if step and not (stage == "transcribe" and details):
                details.append(f"{stage}: {step}")
    return Progress(running, ", ".join(details))


def timings(ws: Workspace) -> dict[str, float]:
    return stage_timings(ws) if ws.timings_dir.is_dir() else {}
