"""The inbox scan's side: claim each complete file into its own run folder and ask for one run per file.

Each file is renamed into ``work/<run id>/input/`` before its run is started, so a re-scan (or a second
scheduler) never sees it again; the run id is deterministic, so starting it twice is a no-op. Claims whose
run never started (a crash between claim and trigger) are returned again.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

from .files import atomic_write_json, sha256_file
from .inbox import Candidate, run_id_for
from .settings import Settings
from .workspace import AlreadyClaimed, Workspace, claim

ORPHAN_AFTER_S = 120.0
"""A claim this old whose run never reached its own claim stage is offered again."""


def inbox_claims(files: list[dict[str, Any]], settings: Settings | None = None) -> list[dict[str, Any]]:
    """Claim the complete inbox files the sensor reported; return one trigger request per file."""
    settings = settings or Settings.from_env()
    for folder in (settings.inbox, settings.work):
        folder.mkdir(parents=True, exist_ok=True, mode=0o750)
    requests = _orphaned_claims(settings)
    for data in files:
        c = Candidate(**data)
        path = Path(c.path)
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue  # gone (claimed by another scheduler, or removed by the user)
        if (st.st_size, st.st_mtime_ns) != (c.size, c.mtime_ns):
            continue  # changed since it looked complete: the next scan takes it
        sha = (hashlib.sha256(os.readlink(path).encode()).hexdigest() if c.is_symlink else sha256_file(path))
        run_id = run_id_for(c, sha)
        ws = Workspace.for_run(settings.work, run_id)
        try:
            claimed = claim(path, ws, settings.inbox)
        except AlreadyClaimed:
            continue
        atomic_write_json(ws.claim_file, {"run_id": run_id, "source": str(path), "input": str(claimed),
                                          "sha256": sha, "claimed_at": time.time()})
        requests.append(trigger_request(run_id, claimed, sha))
    return requests


def trigger_request(run_id: str, path: Path, sha256: str) -> dict[str, Any]:
    """What the inbox DAG's TriggerDagRunOperator gets for one file."""
    return {"trigger_run_id": run_id, "conf": {"path": str(path), "sha256": sha256}}


def _orphaned_claims(settings: Settings) -> list[dict[str, Any]]:
    """Claimed files whose run never got as far as its own claim step."""
    out: list[dict[str, Any]] = []
    if not settings.work.is_dir():
        return out
    now = time.time()
    for claim_file in settings.work.glob("*/claim.json"):
        ws = Workspace(claim_file.parent)
        if ws.run_file.exists() or ws.final_file.exists():
            continue
        try:
            data = ws.read(claim_file)
        except (OSError, ValueError):
            continue
        if now - data.get("claimed_at", now) > ORPHAN_AFTER_S and ws.input_file() is not None:
            out.append(trigger_request(data["run_id"], Path(data["input"]), data["sha256"]))
    return out
