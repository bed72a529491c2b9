"""What has been processed: content sha256 + output options -> the run that produced the outputs.

One small JSON file per content hash under ``<home>/ledger/``, written atomically, so the record
survives crashes and needs no database. A file whose content was already processed with the same
options is skipped (and recorded as such), unless reprocessing is asked for.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .files import atomic_write_json, ensure_dir


class Ledger:
    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def _path(self, sha256: str) -> Path:
        return self.folder / f"{sha256}.json"

    def entries(self, sha256: str) -> dict[str, Any]:
        path = self._path(sha256)
        if not path.is_file():
            return {}
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def lookup(self, sha256: str, options_key: str) -> dict[str, Any] | None:
        """The earlier result for this content and these options, if its outputs still exist."""
        entry = self.entries(sha256).get(options_key)
        if entry and Path(entry.get("out_dir", "")).is_dir():
            return entry
        return None

    def record(self, sha256: str, options_key: str, **details: Any) -> None:
        ensure_dir(self.folder)
        data = self.entries(sha256)
        data[options_key] = {**details, "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        atomic_write_json(self._path(sha256), data)

    def forget(self, sha256: str) -> bool:
        path = self._path(sha256)
        existed = path.exists()
        path.unlink(missing_ok=True)
        return existed
