"""``airflow <component> …`` with the heavy libraries imported first (the embedded scheduler of ``make run``).

The LocalExecutor forks its workers from the scheduler and each task process from a worker, so what the
scheduler imported before it started is already in every task process: the transcribe and diarize tasks no
longer spend seconds importing torch, pyannote.audio (and its lightning) and faster-whisper, nor do the
small tasks importing numpy. Only library code is imported — no model is loaded, no CUDA is initialised
(a fork after that would be unsafe) — and the project's own ``tasks`` package is not preloaded, so its
code changes still reach the next task without a restart. ``Settings.preload_libraries`` turns it off.

    python scripts/airflow_preloaded.py scheduler --skip-serve-logs
"""

from __future__ import annotations

import importlib
import sys

PRELOADED = ("numpy", "torch", "pyannote.audio", "pyannote.audio.pipelines", "faster_whisper", "ctranslate2")
"""Imported in this order before Airflow starts (torch first: pyannote.audio imports it anyway)."""


def preload(names: tuple[str, ...] = PRELOADED) -> list[str]:
    """Import ``names`` with the privacy switches set first; returns those that could not be imported."""
    from tasks.offline import ensure_offline

    ensure_offline()
    missing = []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:  # a lighter install: the task imports what it needs itself
            missing.append(name)
    return missing


def main() -> int:
    missing = preload()
    if missing:
        print(f"airflow_preloaded: not preloaded (not installed): {', '.join(missing)}", file=sys.stderr)
    from airflow.__main__ import main as airflow_main

    sys.argv = ["airflow", *sys.argv[1:]]
    return airflow_main() or 0


if __name__ == "__main__":
    raise SystemExit(main())
