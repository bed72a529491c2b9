"""Shared helpers of the benchmark scripts: corpus discovery, machine description, parameter parsing.

The scripts run as ``.venv/bin/python benchmarks/X.py``: Python puts ``benchmarks/`` on the path, so they
import this module as ``common``; ``tasks`` comes from the editable install (``make setup``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus", ".webm", ".mp4", ".mkv", ".aac"}
REFERENCE_SUFFIXES = (".rttm", ".stm", ".txt")
PYANNOTE_SAMPLE = "pyannote-sample"


def default_corpus() -> Path:
    """``SECURETRANSCRIBE_CORPUS`` or ``../shared/corpus`` next to the repository."""
    return Path(os.environ.get("SECURETRANSCRIBE_CORPUS", ROOT.parent / "shared" / "corpus")).resolve()


def airflow_harness() -> ModuleType:
    """``tests/airflow_harness.py`` (the real embedded Airflow; standard library only), loaded from its file.

    ``tests`` is not an installed package, so it is loaded by path rather than imported.
    """
    name = "securetranscribe_airflow_harness"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / "airflow_harness.py")
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {ROOT / 'tests' / 'airflow_harness.py'}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it: dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def pyannote_sample() -> Path:
    """The two-speaker conversation shipped in the pyannote.audio wheel (with .rttm and .stm)."""
    spec = importlib.util.find_spec("pyannote.audio")
    if spec is None or spec.origin is None:
        raise SystemExit("pyannote.audio is not installed")
    return Path(spec.origin).parent / "sample" / "sample.wav"


@dataclass(frozen=True)
class Item:
    """One audio file and the references found next to it (same stem)."""

    audio: Path
    rttm: Path | None = None
    uem: Path | None = None
    stm: Path | None = None
    txt: Path | None = None

    @property
    def name(self) -> str:
        return self.audio.stem

    @property
    def group(self) -> str:
        return self.audio.parent.name

    @classmethod
    def at(cls, audio: Path) -> Item:
        def sibling(suffix: str) -> Path | None:
            p = audio.with_suffix(suffix)
            return p if p.is_file() else None

        return cls(audio, sibling(".rttm"), sibling(".uem"), sibling(".stm"), sibling(".txt"))

    @property
    def has_reference(self) -> bool:
        return any((self.rttm, self.stm, self.txt))


def discover(paths: list[str]) -> list[Item]:
    """Audio files with at least one reference, from folders (recursive), files or ``pyannote-sample``."""
    items: list[Item] = []
    for raw in paths:
        if raw == PYANNOTE_SAMPLE:
            items.append(Item.at(pyannote_sample()))
            continue
        path = Path(raw).expanduser().resolve()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
            items += [it for it in map(Item.at, found) if it.has_reference]
        elif path.is_file():
            items.append(Item.at(path))
        else:
            raise SystemExit(f"not found: {raw}")
    seen: set[Path] = set()
    return [it for it in items if not (it.audio in seen or seen.add(it.audio))]


def parse_params(pairs: list[str], base: Any = None) -> Any:
    """``key=value`` overrides of :class:`tasks.diarization.DiarizationParams`, typed from its defaults."""
    from tasks.diarization import DEFAULT_PARAMS

    params = base or DEFAULT_PARAMS
    changes: dict[str, Any] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in {f.name for f in dataclasses.fields(params)}:
            raise SystemExit(f"unknown diarization parameter: {key}")
        current = getattr(params, key)
        if isinstance(current, bool):
            changes[key] = value.lower() in {"1", "true", "yes", "on"}
        elif current is None:
            changes[key] = value
        else:
            changes[key] = type(current)(value)
    return dataclasses.replace(params, **changes)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> dict[str, Any]:
    """What the numbers were measured on: cores, memory, load, versions, commit, date."""
    info: dict[str, Any] = {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory_gib"] = round(pages * size / 2**30, 1)
    except (ValueError, OSError):
        pass
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            info["cpu"] = line.split(":", 1)[1].strip()
            break
    try:
        import ctranslate2
        import torch

        info["torch"] = torch.__version__
        info["ctranslate2"] = ctranslate2.__version__
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:
        pass
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                        text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        info["commit"] = None
    return info


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
