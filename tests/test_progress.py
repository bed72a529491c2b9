"""Long stages say where they are: chunk i/N and seconds for transcription, the step and its batches for
diarization, in the log every few seconds and in the run folder's progress markers."""

from __future__ import annotations

import logging
import re

from tasks import recording, stages
from tasks.recording import ProgressLog, StageHooks, chunk_line, step_line
from tasks.settings import Settings
from tasks.workspace import Workspace
from tests.airflow_harness import wait_until


def test_lines():
    assert chunk_line(0, 3, 0, 1234.4) == "chunk 1/3 · 0/1,234 s"
    assert chunk_line(3, 3, 1234.4, 1234.4) == "3/3 chunks · 1,234/1,234 s"
    assert step_line("embeddings", 12, 30) == "embeddings 12/30 (40 %)"
    assert step_line("clustering") == "clustering"


def test_progress_is_logged_periodically_and_kept_in_the_run_folder(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="tasks.recording")
    ws = Workspace(tmp_path / "run").create()
    with ProgressLog(ws, "diarize", every_s=0.05) as shown:
        shown.set("embeddings 3/10 (30 %)")
        wait_until(lambda: sum("embeddings 3/10" in r.getMessage() for r in caplog.records) >= 2, 10, 0.05,
                   "two periodic progress lines")
        assert ws.progress_file("diarize").read_text().strip() == "embeddings 3/10 (30 %)"
        shown.set("clustering")
    assert "diarize: clustering" in caplog.records[-1].getMessage()  # the last state, on leaving


def test_transcribe_and_diarize_stages_report_chunks_and_steps(tmp_path, jfk, caplog, monkeypatch):
    monkeypatch.setattr(recording, "PROGRESS_EVERY_S", 0.2)
    caplog.set_level(logging.INFO, logger="tasks.recording")
    settings = Settings.from_env(home=tmp_path / "home", model="tiny.en", chunk_min_s=2.0, chunk_target_s=3.0,
                                 chunk_max_s=5.0, metrics_url="none")
    info = stages.claim_stage("progress-test", jfk, {}, settings, hooks=StageHooks(), take=False)
    ws = Workspace(info["work"])
    for step in (stages.probe_stage, stages.plan_stage, stages.transcribe_stage, stages.diarize_stage):
        step(ws, settings, hooks=StageHooks())
    chunks = len(ws.read(ws.plan_file)["spans"])
    assert chunks > 1
    logged = [r.getMessage() for r in caplog.records]
    assert any(re.match(rf"transcribe: chunk 1/{chunks} · 0/1[01] s", m) for m in logged), logged
    assert ws.progress_file("transcribe").read_text().startswith(f"{chunks}/{chunks} chunks · 11/11 s")
    diarize_lines = [m for m in logged if m.startswith("diarize: ")]
    assert any(re.match(r"diarize: (segmentation|embeddings) \d+/\d+ \(\d+ %\)", m) for m in diarize_lines), \
        diarize_lines
    assert ws.progress_file("diarize").read_text().strip() == "second look"  # the last step: after the clustering
