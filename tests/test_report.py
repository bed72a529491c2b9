"""``securetranscribe report``: pandas summary (table, csv, json) and the PNG plot."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tasks.cli import main
from tasks.metrics import MetricsStore
from tasks.metrics.report import build, parse_since, plot, render

NOW = datetime.now(UTC).replace(microsecond=0)
# stage: (x real time on the GPU server, fixed seconds)
SPEEDS = {"probe": (400.0, 0.5), "plan": (150.0, 1.0), "transcribe": (22.0, 2.0), "diarize": (30.0, 1.0),
          "merge": (3000.0, 0.1), "export": (800.0, 0.5)}


def seed(store: MetricsStore, outbox: Path | None = None, now: datetime = NOW) -> list[str]:
    """Eight files over three days: six successes (one with GPU OOM shrinking and a task retry), one quarantined
    at decode, one still transcribing. Returns the run ids, oldest first."""
    runs = []
    durations = [1834.0, 612.0, 3611.5, 95.0, 2400.0, 1210.0]
    for i, audio in enumerate(durations):
        run = f"scheduled__{(now - timedelta(hours=60 - 10 * i)).isoformat()}"
        stem = f"meeting-{i + 1:02d}"
        runs.append(run)
        t = now - timedelta(hours=60 - 10 * i)
        store.record_file(run, status="running", file_name=f"{stem}.flac", sha256=f"{i:02d}" * 32,
                          audio_duration=audio)
        for stage, (speed, fixed) in SPEEDS.items():
            tries = 2 if (i == 2 and stage == "transcribe") else 1
            for attempt in range(1, tries + 1):
                factor = 1.6 if i == 2 and stage == "transcribe" else 1.0 + 0.08 * (i % 3)
                seconds = fixed + audio / speed * factor
                failed = attempt < tries
                if failed:
                    seconds *= 0.4
                store.record_stage(
                    run, stage, attempt, start=t, end=t + timedelta(seconds=seconds), audio_seconds=audio,
                    status="failed" if failed else "success", error="GpuOutOfMemory: CUDA out of memory" if failed
                    else None, device="cuda" if stage in ("transcribe", "diarize") else "cpu",
                    chunk_s=120.0 if i == 2 and stage == "transcribe" else 240.0 if stage == "transcribe" else None,
                    batch_size=(2 if i == 2 else 8) if stage == "transcribe" else None,
                    oom_retries=3 if i == 2 and stage == "transcribe" and not failed else 0,
                    peak_rss_mb=900.0 + 50 * i, peak_gpu_mb=2100.0 if stage in ("transcribe", "diarize") else None)
                t += timedelta(seconds=seconds + 3)
        outputs = [f"{stem}/{stem}.{ext}" for ext in ("json", "txt", "srt")]
        if outbox is not None:
            (outbox / stem).mkdir(parents=True, exist_ok=True)
            for rel in outputs:
                (outbox / rel).write_text(f"{rel}\n", encoding="utf-8")
        store.record_file(run, status="success", language="en" if i % 2 == 0 else "de", speakers=2 + i % 3,
                          model="large-v3" if i % 2 else "base", device="cuda", compute_type="float16",
                          outputs=outputs)
    bad = f"manual__{(now - timedelta(hours=3)).isoformat()}"
    store.record_file(bad, status="quarantined", file_name="notes.docx", sha256="ee" * 32,
                      error="InvalidAudio: no audio stream")
    store.record_stage(bad, "probe", 1, start=now - timedelta(hours=3), end=now - timedelta(hours=3, seconds=-1),
                       status="failed", error="InvalidAudio: no audio stream")
    live = f"manual__{(now - timedelta(minutes=2)).isoformat()}"
    store.record_file(live, status="running", file_name="board-call.m4a", sha256="ff" * 32, audio_duration=2700.0)
    store.record_stage(live, "probe", 1, start=now - timedelta(seconds=120), end=now - timedelta(seconds=112),
                       audio_seconds=2700.0)
    store.record_stage(live, "transcribe", 1, start=now - timedelta(seconds=110), audio_seconds=2700.0)
    return [*runs, bad, live]


@pytest.fixture
def store(tmp_path):
    s = MetricsStore(f"sqlite:///{tmp_path / 'metrics.db'}")
    s.upgrade()
    seed(s)
    yield s
    s.close()


def test_summary_numbers(store):
    report = build(store)
    o = report.overall
    assert (o["files"], o["files_success"], o["files_quarantined"], o["files_running"]) == (8, 6, 1, 1)
    assert o["audio_hours"] == pytest.approx(sum([1834.0, 612.0, 3611.5, 95.0, 2400.0, 1210.0]) / 3600, abs=1e-3)
    assert (o["oom_retries"], o["stage_retries"], o["stage_failures"]) == (3, 1, 2)
    assert o["stage_attempts"] == 6 * 6 + 1 + 2  # the running transcribe is not counted
    stages = report.stages.set_index("stage")
    assert list(stages.index) == ["probe", "plan", "transcribe", "diarize", "merge", "export"]
    assert stages.loc["transcribe", "attempts"] == 7 and stages.loc["transcribe", "failed"] == 1
    assert 10 < stages.loc["transcribe", "rtf_mean"] < 22 <= stages.loc["transcribe", "rtf_p95"] + 1
    assert stages["wall_share_pct"].sum() == pytest.approx(100, abs=0.1)
    assert stages["wall_share_pct"].idxmax() == "transcribe"


def test_since_filters(store):
    assert build(store, NOW - timedelta(hours=4)).overall["files"] == 2
    assert parse_since("12h", NOW) == NOW - timedelta(hours=12)
    assert parse_since("2026-11-01T00:00:00+00:00") == datetime(2026, 11, 1, tzinfo=UTC)
    with pytest.raises(ValueError):
        parse_since("last tuesday")


def test_formats(store):
    report = build(store)
    table = render(report, "table")
    assert "files 8 (success 6" in table and "transcribe" in table and "GPU OOM retries 3" in table
    rows = list(csv.DictReader(io.StringIO(render(report, "csv"))))
    assert [r["stage"] for r in rows][-1] == "(all)" and rows[-1]["files"] == "8"
    data = json.loads(render(report, "json"))
    assert data["overall"]["files"] == 8 and {s["stage"] for s in data["stages"]} >= {"transcribe", "diarize"}


def test_empty_database(tmp_path):
    s = MetricsStore(f"sqlite:///{tmp_path / 'empty.db'}")
    s.upgrade()
    report = build(s)
    assert report.overall["files"] == 0 and "no stage attempts" in render(report)
    assert json.loads(render(report, "json"))["stages"] == []
    assert plot(report, tmp_path / "empty.png").stat().st_size > 1000


def test_cli_report_with_plot(store, tmp_path, capsys, artifacts):
    out = artifacts / "metrics_report.png"
    out.unlink(missing_ok=True)
    assert main(["report", "--url", store.url, "--format", "json", "--plot", str(out)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["overall"]["files_success"] == 6
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
    assert main(["report", "--url", store.url, "--since", "4h"]) == 0
    assert "files 2 " in capsys.readouterr().out


def test_cli_report_default_url_from_settings(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SECURETRANSCRIBE_HOME", str(tmp_path))
    monkeypatch.delenv("SECURETRANSCRIBE_METRICS_URL", raising=False)
    assert main(["report", "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("stage,")
    assert (tmp_path / "metrics.db").is_file()
    assert main(["report", "--since", "yesterday-ish"]) == 1
