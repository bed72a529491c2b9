"""End to end with the real Airflow (scheduler, dag-processor, triggerer, api-server; SQLite, LocalExecutor).

Files dropped into the inbox become one processing run each; outputs, archive, quarantine, metrics, the
grid in headless Chromium, and a task process killed mid-transcription that resumes from its checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from datetime import datetime

import pytest

from tests.airflow_harness import running_airflow, wait_until
from tests.conftest import ami_meeting, corpus_file

pytestmark = [pytest.mark.airflow, pytest.mark.slow, pytest.mark.timeout(1800)]
PROCESS = "securetranscribe_process"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]


@pytest.fixture(scope="module")
def af(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    with running_airflow(tmp, SECURETRANSCRIBE_MODEL="tiny.en", SECURETRANSCRIBE_INBOX_STABLE_S="2",
                         SECURETRANSCRIBE_CHUNK_TARGET_S="60", SECURETRANSCRIBE_CHUNK_MIN_S="30",
                         SECURETRANSCRIBE_CHUNK_MAX_S="80") as airflow:
        try:
            yield airflow
        except Exception:
            print(airflow.tail())
            raise


def by_prefix(runs: list[dict], prefix: str) -> dict:
    matches = [r for r in runs if r["dag_run_id"].startswith(prefix)]
    assert len(matches) == 1, [r["dag_run_id"] for r in runs]
    return matches[0]


@pytest.fixture(scope="module")
def first_batch(af):
    """Two corpus files (one with a non-ASCII name) and one non-audio file dropped together."""
    inbox = af.settings_home / "inbox"
    shutil.copyfile(corpus_file("speech/jfk.flac"), inbox / "jfk.flac")
    shutil.copyfile(corpus_file("ami/trñ00.flac"), inbox / "trñ00.flac")
    (inbox / "quarterly report.wav").write_bytes(b"%PDF-1.4\n" + b"0" * 4000)
    (inbox / ".DS_Store").write_bytes(b"x")
    (inbox / "upload.mp3.part").write_bytes(b"partial")
    return af.wait_for_runs(PROCESS, count=3, timeout=900)


def test_one_run_per_file_with_outputs_archive_and_quarantine(af, first_batch):
    home = af.settings_home
    assert len(first_batch) == 3
    jfk, trn, bad = (by_prefix(first_batch, p) for p in ("file__jfk__", "file__trn00__", "file__quarterly_report__"))
    assert jfk["state"] == "success" and trn["state"] == "success" and bad["state"] == "failed"
    assert json.loads((home / "outbox" / "jfk" / "jfk.json").read_text())["segments"]
    assert (home / "outbox" / "trñ00" / "trñ00.txt").is_file()
    assert {p.name for p in (home / "archive").glob("*/*/*/*")} == {"jfk.flac", "trñ00.flac"}
    reason = json.loads((home / "quarantine" / bad["dag_run_id"] / "reason.json").read_text())
    assert reason["error_type"] == "InvalidAudio" and reason["stage"] == "probe"
    assert (home / "quarantine" / bad["dag_run_id"] / "quarterly report.wav").is_file()
    # ignored names stay where they are, untouched
    assert {p.name for p in (home / "inbox").iterdir()} == {".DS_Store", "upload.mp3.part"}


def test_rescans_never_start_a_second_run_for_a_file(af, first_batch):
    inbox = af.settings_home / "inbox"
    shutil.copyfile(corpus_file("speech/jfk.flac"), inbox / "jfk again.flac")  # same content, new name
    runs = af.wait_for_runs(PROCESS, count=4, timeout=600)
    assert len(runs) >= 4
    again = by_prefix(runs, "file__jfk_again__")
    assert again["state"] == "success"
    states = {t["task_id"]: t["state"] for t in af.task_instances(PROCESS, again["dag_run_id"])}
    assert states["transcribe"] == "skipped"  # duplicate content: recorded, not redone
    ids = [r["dag_run_id"] for r in runs]
    assert len(set(ids)) == len(ids)
    # the scanner went round again after that drop, and still no new run appeared
    scans = af.runs("securetranscribe_inbox")
    wait_until(lambda: len(af.runs("securetranscribe_inbox")) > len(scans) or
               any(r["state"] == "running" for r in af.runs("securetranscribe_inbox")), 120, 2.0, "next scan")
    assert len([r for r in af.runs(PROCESS) if r["dag_run_id"].startswith("file__")]) == 4


def test_metrics_rows_add_up_to_the_run(af, first_batch, tmp_path):
    """A run alone on the machine: its stage rows cover its wall time but for the scheduler's short hand-overs."""
    from tasks.metrics import MetricsStore

    af.wait_for_runs(PROCESS, count=4, timeout=600)  # nothing else running
    # 4 minutes, so that the scheduler's hand-over between tasks (a fixed ~0.3 s per task, in no stage's
    # row) stays a small share of the run, as it is for real recordings
    source = ami_meeting(tmp_path / "metrics check.wav", minutes=4.0)
    duration = source.stat().st_size / 2 / 16000  # close enough: 44-byte header
    run_id = "manual__metrics-check"
    af.trigger(PROCESS, {"path": str(source)}, run_id=run_id)
    run = next(r for r in af.wait_for_runs(PROCESS, count=5, timeout=600) if r["dag_run_id"] == run_id)
    assert run["state"] == "success"

    store = MetricsStore(f"sqlite:///{af.settings_home / 'metrics.db'}")
    record = store.file(run_id)
    assert record.status == "success" and record.file_name == "metrics check.wav" and record.model == "tiny.en"
    assert record.audio_duration == pytest.approx(duration, abs=0.1) and record.speakers >= 2
    assert any(str(o).endswith("metrics check/metrics check.json") for o in record.outputs)
    last = record.last_tries()
    assert {"claim", "probe", "plan", "transcribe", "diarize", "merge", "export-json", "export-txt", "metrics"} \
        <= set(last)
    start = datetime.fromisoformat(run["start_date"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(run["end_date"].replace("Z", "+00:00"))
    wall = (end - start).total_seconds()
    # transcribe and diarize run side by side when the gpu pool has two slots (CPU-only hosts): the rows'
    # time is counted once where they overlap. What no row covers is the scheduler's hand-over between
    # tasks and the finalize task (no row: it closes the file's row): short gaps, never a stage's work.
    total, reach, gaps = 0.0, start.timestamp(), []
    for a, b in sorted((s.start.timestamp(), s.start.timestamp() + s.seconds) for s in last.values()):
        gaps.append(round(max(0.0, a - reach), 2))
        total += max(0.0, b - max(a, reach))
        reach = max(reach, b)
    gaps.append(round(max(0.0, end.timestamp() - reach), 2))
    detail = (total, wall, gaps, {k: round(v.seconds, 2) for k, v in last.items()})
    assert max(gaps) <= 6.0, detail  # a missing stage would leave a gap of its whole duration
    assert 0.6 * wall <= total <= 1.05 * wall, detail
    assert last["transcribe"].rtf > 1.0 and last["transcribe"].peak_rss_mb > 100
    assert last["diarize"].audio_seconds == pytest.approx(duration, abs=0.1)


def test_grid_shows_the_runs_in_chromium(af, first_batch, artifacts):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(120_000)
            page.goto(f"{af.base}/dags/{PROCESS}")
            page.get_by_label("Username").fill("admin")
            page.get_by_label("Password").fill(af.password())
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(re.compile(rf".*/dags/{PROCESS}.*"))
            expect(page.get_by_text(PROCESS).first).to_be_visible()
            page.goto(f"{af.base}/dags/{PROCESS}/runs")
            for prefix in ("file__jfk__", "file__trn00__", "file__quarterly_report__"):
                expect(page.get_by_text(re.compile(prefix)).first).to_be_visible()
            page.screenshot(path=str(artifacts / "airflow_runs.png"), full_page=True)
            page.goto(f"{af.base}/dags/{PROCESS}")
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(artifacts / "airflow_grid.png"), full_page=True)
        finally:
            browser.close()


def test_task_killed_mid_transcription_resumes_from_checkpoint(af, first_batch, tmp_path):
    from tasks.result import Transcript

    source = ami_meeting(tmp_path / "long meeting.wav", minutes=8.0)
    run_id = "manual__kill-test"
    af.trigger(PROCESS, {"path": str(source), "diarize": False}, run_id=run_id)
    work = af.settings_home / "work" / run_id
    wait_until(lambda: (work / "chunks" / "chunk-00000.json").is_file(), 600, 0.1, "the first checkpointed chunk")
    pid = int((work / "transcribe.pid").read_text())
    os.kill(pid, signal.SIGKILL)  # the task process dies mid-transcription
    assert not (work / "transcription.json").exists()

    def finished():
        run = af.api("GET", f"/dags/{PROCESS}/dagRuns/{run_id}")
        return run if run["state"] in ("success", "failed") else None

    run = wait_until(finished, 900, 2.0, "the killed run to finish")
    assert run["state"] == "success"
    ti = next(t for t in af.task_instances(PROCESS, run_id) if t["task_id"] == "transcribe")
    assert ti["try_number"] >= 2
    result = json.loads((work / "transcription.json").read_text())
    assert result["resumed_chunks"] >= 1 and result["try_number"] >= 2
    chunks = result["chunks"]
    assert [c["index"] for c in chunks] == list(range(len(chunks))) and len(chunks) >= 4
    assert all(a["end"] == b["start"] for a, b in zip(chunks, chunks[1:]))
    transcript = Transcript.load(af.settings_home / "outbox" / "long meeting" / "long meeting.json")
    starts = [w.start for w in transcript.words]
    assert starts == sorted(starts) and transcript.duration > 300
    assert transcript.words[-1].end > 0.9 * transcript.duration - 60  # transcribed to the end
    assert source.exists()  # a file outside the inbox is copied, never moved
    from tasks.metrics import MetricsStore

    rows = [s for s in MetricsStore(f"sqlite:///{af.settings_home / 'metrics.db'}").file(run_id).stages
            if s.stage == "transcribe"]
    assert [r.try_number for r in rows] == list(range(1, len(rows) + 1)) and len(rows) >= 2  # one row per try
    assert rows[0].status == "failed" and "interrupted" in rows[0].error and rows[-1].status == "success"
