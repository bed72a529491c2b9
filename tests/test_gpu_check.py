"""`make gpu-check`'s CPU smoke mode (what CI runs): a 30 s corpus file through the library, every export."""

import json
import subprocess
import sys

import pytest

from tasks.settings import ALL_FORMATS
from tests.conftest import ROOT


@pytest.mark.slow
def test_cpu_smoke_run_writes_the_report_and_every_export(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke", "--out",
                           str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "CPU smoke run" in proc.stdout and "| check | result | detail |" in proc.stdout

    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert {"gpu", "mode", "reason", "command", "machine", "audio", "parts", "checks", "total_s", "ok"} <= set(report)
    assert report["gpu"] is False and report["mode"] == "cpu-smoke" and report["ok"] is True
    assert report["checks"] and all(c["ok"] for c in report["checks"])

    library = report["parts"]["library"]
    assert library["device"] == "cpu" and library["model"] == "tiny.en"
    assert {"wall_s", "load_s", "rtf_x", "stages", "attempts", "exports", "peak_rss_mb", "words"} <= set(library)
    assert {"probe", "plan", "transcribe", "diarize", "merge"} <= set(library["stages"])
    assert {a["device"] for a in library["attempts"]} == {"cpu"}
    assert 29 < report["audio"]["duration_s"] < 31 and library["words"] > 0

    assert set(library["exports"]) == set(ALL_FORMATS)
    for fmt, export in library["exports"].items():
        assert export["error"] is None and export["files"] and export["bytes"] > 0, fmt
        for name in export["files"]:
            assert (tmp_path / "gpu_check_exports" / name).stat().st_size > 0
    assert (tmp_path / "gpu_check.md").read_text().startswith("# GPU check — no GPU: CPU smoke run")
