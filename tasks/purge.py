"""Remove everything SecureTranscribe keeps about one file's content (by sha256).

Outputs (outbox folders whose ``.source.json`` names this sha256), work folders of its runs, its ledger
entry and its metrics rows. The original audio in ``archive/`` or ``quarantine/`` is kept unless asked
for, so a purge never deletes a user's recording by surprise.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .files import sha256_file
from .ledger import Ledger
from .settings import Settings


@dataclass
class PurgeReport:
    sha256: str
    outputs: list[str] = field(default_factory=list)
    work: list[str] = field(default_factory=list)
    originals: list[str] = field(default_factory=list)
    metrics_files: int = 0
    ledger: bool = False

    @property
    def removed_anything(self) -> bool:
        return bool(self.outputs or self.work or self.originals or self.metrics_files or self.ledger)


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def purge(sha256: str, settings: Settings | None = None, *, originals: bool = False,
          dry_run: bool = False) -> PurgeReport:
    """Delete the outputs, work folders, ledger entry and metrics rows of ``sha256``."""
    settings = settings or Settings.from_env()
    report = PurgeReport(sha256)
    if settings.outbox.is_dir():
        for marker in settings.outbox.glob("*/.source.json"):
            if _json(marker).get("sha256") == sha256:
                report.outputs.append(str(marker.parent))
    if settings.work.is_dir():
        for run_file in settings.work.glob("*/run.json"):
            if _json(run_file).get("sha256") == sha256:
                report.work.append(str(run_file.parent))
    if originals:
        for root in (settings.archive, settings.quarantine):
            if root.is_dir():
                report.originals += [str(p) for p in root.rglob("*")
                                     if p.is_file() and not p.is_symlink() and p.name != "reason.json"
                                     and sha256_file(p) == sha256]
    if dry_run:
        return report
    for folder in report.outputs + report.work:
        shutil.rmtree(folder, ignore_errors=True)
    for path in report.originals:
        Path(path).unlink(missing_ok=True)
        reason = Path(path).parent / "reason.json"
        if reason.is_file() and not any(p for p in reason.parent.iterdir() if p.name != "reason.json"):
            shutil.rmtree(reason.parent)
    report.ledger = Ledger(settings.home / "ledger").forget(sha256)
    url = settings.metrics_database_url
    if url:
        from .metrics import MetricsStore

        store = MetricsStore(url)
        store.upgrade()
        report.metrics_files = store.purge(sha256)
        store.close()
    return report
