"""The last stage: archive the original once its outputs are durable, or quarantine it with a reason."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from .files import atomic_write_json
from .ledger import Ledger
from .options import run_settings
from .recording import StageHooks
from .settings import Settings
from .workspace import RunInfo, Workspace, archive_original, quarantine_original

RETRYABLE_OUTCOMES = ("quarantined", "partial")
"""Clearing and re-running finalize re-evaluates these outcomes."""
_FILE_STATUS = {"archived": "success", "duplicate": "skipped", "not_claimed": "skipped", "partial": "failed",
                "quarantined": "quarantined"}


def export_results(ws: Workspace) -> dict[str, dict[str, Any]]:
    """What each export format recorded: ``{"txt": {"ok": True, "files": […]}, …}``."""
    if not ws.exports_dir.is_dir():
        return {}
    return {p.stem: ws.read(p) for p in ws.exports_dir.glob("*.json")}


def finalize_stage(ws: Workspace, settings: Settings | None = None, *, hooks: StageHooks | None = None,
                   **_: Any) -> dict[str, Any]:
    """Archive the original after its outputs are durable, or quarantine it with a reason.

    Returns ``{"outcome": "archived"|"duplicate"|"quarantined"|"partial", …}``; only "archived" and
    "duplicate" are successes. "partial": the transcript exists but some export formats failed — the
    original is archived (nothing is lost) and the run is reported failed with the formats that failed.
    """
    settings = settings or Settings.from_env()
    hooks = hooks or StageHooks.for_settings(settings)
    previous = ws.read(ws.final_file) if ws.final_file.is_file() else None
    if previous and previous["outcome"] not in RETRYABLE_OUTCOMES:
        return previous
    info = ws.run_info() if ws.run_file.is_file() else None
    original = Path(info.input) if info else ws.input_file()
    if previous and previous["outcome"] == "quarantined" and info:  # a retry after a fix: take it back
        held = Path(previous["folder"]) / Path(info.input).name
        if held.exists() or held.is_symlink():
            original = held
    if info is None and original is None:
        outcome: dict[str, Any] = {"outcome": "not_claimed", "failures": ws.failures()}
        atomic_write_json(ws.final_file, outcome)
        return outcome
    formats = list(run_settings(settings, info.options).formats) if info else []
    results = export_results(ws)
    ok = [f for f in formats if results.get(f, {}).get("ok")]
    failed = [f for f in formats if f not in ok]
    if info and info.duplicate_of:
        outcome = {"outcome": "duplicate", "archived": _keep_original(info, original, settings),
                   "duplicate_of": info.duplicate_of}
    elif info and ws.transcript_file.is_file() and ok:
        archived = _keep_original(info, original, settings) or (previous or {}).get("archived")
        if previous and previous["outcome"] == "quarantined":  # recovered: its reason no longer applies
            shutil.rmtree(previous["folder"], ignore_errors=True)
        Ledger(settings.home / "ledger").record(info.sha256, info.options_key, run_id=info.run_id,
                                                out_dir=info.out_dir, archived=archived, formats=ok)
        outcome = {"outcome": "archived" if not failed else "partial", "archived": archived,
                   "out_dir": info.out_dir, "formats": ok, "failed_formats": failed}
    else:
        outcome = _quarantine(ws, info, original, settings)
    atomic_write_json(ws.final_file, outcome)
    cleanup(ws)
    error = None
    if outcome["outcome"] == "quarantined":
        error = f"{outcome['reason']['stage']}: {outcome['reason']['error_type']}: {outcome['reason']['message']}"
    elif outcome["outcome"] == "partial":
        error = "export failed: " + ", ".join(outcome["failed_formats"])
    hooks.file(ws, _FILE_STATUS[outcome["outcome"]], error=error)
    return outcome


def _quarantine(ws: Workspace, info: RunInfo | None, original: Path | None, settings: Settings) -> dict[str, Any]:
    failures = ws.failures()
    last = failures[-1] if failures else {"stage": "unknown", "error_type": "Incomplete",
                                          "message": "the pipeline did not complete; see the Airflow task logs"}
    reason = {
        "file": info.name if info else (original.name if original else None),
        "sha256": info.sha256 if info else None,
        "run_id": ws.run_id,
        "stage": last["stage"],
        "error_type": last["error_type"],
        "kind": last.get("kind"),
        "message": last["message"],
        "attempts": failures,
        "quarantined_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if info is not None and not info.from_inbox:  # the source stays where it is; drop our copy
        reason["source"] = info.source
        if original is not None and original.parent == ws.input_dir:
            original.unlink(missing_ok=True)
        original = None
    folder = quarantine_original(original, settings.quarantine, ws.run_id, reason)
    return {"outcome": "quarantined", "folder": str(folder), "reason": reason}


def _keep_original(info: RunInfo, original: Path | None, settings: Settings) -> str | None:
    """Archive an inbox original (move); a copy of an outside source is just dropped. Returns its place."""
    if original is None or not (original.exists() or original.is_symlink()):
        return None
    if info.from_inbox:
        return str(archive_original(original, settings.archive))
    original.unlink()
    return info.source


def cleanup(ws: Workspace) -> None:
    """Drop the decoded audio and checkpoints (privacy, disk); keep the small records."""
    ws.audio_file.unlink(missing_ok=True)
    if ws.chunks_dir.is_dir():
        for p in ws.chunks_dir.iterdir():
            p.unlink()
        ws.chunks_dir.rmdir()
