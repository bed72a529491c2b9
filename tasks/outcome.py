"""What a finished run tells the people and the DAGs around it: its note (one line) and its asset event.

``run_note``: the file name and the outcome, or the reason it was quarantined, in one line (the
processing DAGs show it as the Airflow run's note). ``transcript_event``: the extras of the
``securetranscribe/transcripts`` asset event a run emits once its file is archived — run id, file,
outbox paths, language, duration, speakers — so users' own DAGs can be scheduled on new transcripts.
Counts, names and paths only: never transcript text. No Airflow import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .finalize import export_results
from .workspace import Workspace

TRANSCRIPTS_ASSET = "securetranscribe/transcripts"
"""The asset (name and URI) every archived file emits an event for."""
NOTE_MAX = 300
"""A note is one line, at most this long (the run page shows it whole)."""


def one_line(text: str, limit: int = NOTE_MAX) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def running_note(path: str | None) -> str:
    """The note of a run that has just started: its file."""
    return one_line(f"{Path(path).name if path else 'no file given'} — processing")


def _file_name(ws: Workspace, outcome: dict[str, Any]) -> str:
    if ws.run_file.is_file():
        return ws.run_info().name
    reason = outcome.get("reason") or {}
    return reason.get("file") or "no file"


def run_note(ws: Workspace, outcome: dict[str, Any]) -> str:
    """``jfk.flac — transcribed: 11 s, en, 1 speaker, 9 formats`` or ``bad.flac — quarantined: probe failed: …``."""
    name = _file_name(ws, outcome)
    kind = outcome.get("outcome")
    if kind == "archived":
        facts = []
        if ws.transcript_file.is_file():
            t = ws.read(ws.transcript_file)
            speakers = len(t.get("speakers") or [])
            facts = [f"{t.get('duration', 0):.0f} s", t.get("language") or "language unknown",
                     f"{speakers} speaker{'' if speakers == 1 else 's'}"]
        facts.append(f"{len(outcome.get('formats') or [])} formats")
        return one_line(f"{name} — transcribed: {', '.join(facts)}")
    if kind == "duplicate":
        earlier = (outcome.get("duplicate_of") or {}).get("run_id")
        return one_line(f"{name} — already transcribed" + (f" by run {earlier}" if earlier else "") + ": not again")
    if kind == "partial":
        return one_line(f"{name} — exports failed: {', '.join(outcome.get('failed_formats') or [])}; the transcript "
                        f"and the other formats are in {outcome.get('out_dir')}")
    if kind == "quarantined":
        r = outcome.get("reason") or {}
        return one_line(f"{name} — quarantined: {r.get('stage')} failed: {r.get('error_type')}: {r.get('message')}")
    failures = outcome.get("failures") or []
    why = f": {failures[-1]['stage']} failed: {failures[-1]['message']}" if failures else ""
    return one_line(f"{name} — not processed{why}")


def transcript_event(ws: Workspace, outcome: dict[str, Any]) -> dict[str, Any] | None:
    """The asset event's extras for an archived file; None for every other outcome (no event)."""
    if outcome.get("outcome") != "archived" or not ws.transcript_file.is_file():
        return None
    info = ws.run_info()
    t = ws.read(ws.transcript_file)
    outputs = {fmt: r.get("files", []) for fmt, r in sorted(export_results(ws).items()) if r.get("ok")}
    return {
        "run_id": info.run_id,
        "file": info.name,
        "stem": info.stem,
        "sha256": info.sha256,
        "out_dir": info.out_dir,
        "outputs": outputs,
        "archived": outcome.get("archived"),
        "language": t.get("language"),
        "duration": t.get("duration"),
        "speakers": list(t.get("speakers") or []),
        "speaker_names": dict(info.options.get("speaker_names") or {}),
    }
