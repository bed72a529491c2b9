"""The DAGs: integrity of the DagBag, and whole runs of the processing DAG with dag.test()."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, corpus_file

DAG_IDS = {"securetranscribe_inbox", "securetranscribe_process"}
HEAVY = ("torch", "faster_whisper", "pyannote", "ctranslate2", "numpy", "av", "weasyprint")


def test_dagbag_has_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert DAG_IDS <= set(dagbag.dag_ids)


def test_every_dag_has_tags_docs_and_task_docs(dagbag):
    for dag_id in dagbag.dag_ids:
        dag = dagbag.dags[dag_id]
        assert dag.tags, dag_id
        assert dag.doc_md and len(dag.doc_md) > 100, dag_id
        for t in dag.tasks:
            assert t.doc_md, f"{dag_id}.{t.task_id} has no docs"


def test_gpu_tasks_use_the_gpu_pool_queue_and_retry(dagbag):
    gpu = [t for d in dagbag.dags.values() for t in d.tasks if t.task_id in ("transcribe", "diarize")]
    assert len(gpu) >= 2
    for t in gpu:
        assert t.pool == "gpu" and t.queue == "gpu"
        assert t.retries >= 2 and t.retry_exponential_backoff
        assert t.retry_policy is not None
    finalize = dagbag.dags["securetranscribe_process"].get_task("finalize")
    assert finalize.trigger_rule == "all_done"


def test_starting_a_claimed_files_run_outlasts_a_minute_of_target_dag_reparsing(dagbag):
    """The inbox has moved the file into its work folder before ``start_runs``: a target DAG that is briefly
    unknown (deactivated after a stalled parse) must not strand it. The retries' delays add up to minutes."""
    start = dagbag.dags["securetranscribe_inbox"].get_task("start_runs")
    base = start.retry_delay.total_seconds()
    cap = start.max_retry_delay.total_seconds()
    waits = [min(cap, base * start.retry_exponential_backoff ** k) for k in range(start.retries)]
    assert start.retries >= 5 and sum(waits) >= 300, waits


def test_processing_dag_shape(dagbag):
    dag = dagbag.dags["securetranscribe_process"]
    order = ["claim", "probe", "plan", "transcribe", "merge", "export", "metrics", "finalize"]
    for a, b in zip(order, order[1:]):
        assert b in dag.get_task(a).downstream_task_ids or b in {
            t for d in dag.get_task(a).downstream_task_ids for t in dag.get_task(d).downstream_task_ids}
    assert "merge" in dag.get_task("diarize").downstream_task_ids
    assert "diarize" in dag.get_task("plan").downstream_task_ids
    inbox = dagbag.dags["securetranscribe_inbox"]
    assert inbox.max_active_runs == 1 and type(inbox.timetable).__name__ == "ContinuousTimetable"
    assert inbox.start_date is not None  # see the DAG file: a continuous DAG without one stalls


def test_dag_files_parse_fast_and_import_nothing_heavy(airflow_db):
    """Each DAG file on its own, in a fresh interpreter: under 2 s, and no ML library imported."""
    code = (
        "import sys, json\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"sys.path.insert(0, {str(ROOT / 'dags')!r})\n"
        "bag = DagBag(dag_folder=sys.argv[1])\n"
        "print(json.dumps({'errors': bag.import_errors, 'seconds': [s.duration.total_seconds() "
        "for s in bag.dagbag_stats], 'heavy': sorted({m.split('.')[0] for m in sys.modules} & set(sys.argv[2:]))}))\n"
    )
    files = sorted(p for p in (ROOT / "dags").glob("*.py"))
    assert files
    for path in files:
        out = subprocess.run([sys.executable, "-c", code, str(path), *HEAVY], capture_output=True, text=True,
                             check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        assert result["errors"] == {}, path.name
        assert result["heavy"] == [], f"{path.name} imports {result['heavy']} at parse time"
        assert all(s < 2.0 for s in result["seconds"]), f"{path.name} parsed in {result['seconds']} s"


# -- whole runs with dag.test() -----------------------------------------------------------------------
@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    for key, value in {"SECURETRANSCRIBE_HOME": str(home), "SECURETRANSCRIBE_MODEL": "tiny.en"}.items():
        monkeypatch.setenv(key, value)
    (home / "inbox").mkdir(parents=True)
    return home


def run_dag(dagbag, conf: dict) -> tuple[str, dict]:
    dag = dagbag.dags["securetranscribe_process"]
    dagrun = dag.test(run_conf=conf)
    states = {(ti.task_id, ti.map_index): ti.state for ti in dagrun.get_task_instances()}
    return dagrun.state, {"run_id": dagrun.run_id, "states": states}


def drop(home: Path, source: Path, name: str | None = None) -> Path:
    dest = home / "inbox" / (name or source.name)
    shutil.copyfile(source, dest)
    return dest


def metrics_file(home: Path, run_id: str):
    from tasks.metrics import MetricsStore
    from tasks.settings import Settings

    return MetricsStore(Settings.from_env(home=home).metrics_database_url).file(run_id)


def test_jfk_run_writes_outputs_archives_and_records_metrics(dagbag, home):
    from tasks.result import Transcript

    path = drop(home, corpus_file("speech/jfk.flac"))
    state, run = run_dag(dagbag, {"path": str(path)})
    assert state == "success", run
    assert not path.exists()  # moved out of the inbox
    archived = list((home / "archive").glob("*/*/*/jfk.flac"))
    assert len(archived) == 1
    assert archived[0].read_bytes() == corpus_file("speech/jfk.flac").read_bytes()
    out = home / "outbox" / "jfk"
    transcript = Transcript.load(out / "jfk.json")
    assert "ask not what your country" in transcript.text.lower()
    assert (out / "jfk.txt").read_text(encoding="utf-8").startswith("[00:00:00] SPEAKER_00:")
    assert oct((out / "jfk.json").stat().st_mode & 0o777) == "0o640"
    work = home / "work" / run["run_id"]
    assert not (work / "audio.npy").exists() and json.loads((work / "final.json").read_text())["outcome"] == "archived"

    record = metrics_file(home, run["run_id"])
    assert record.status == "success" and record.sha256 and record.audio_duration == pytest.approx(11.0, abs=0.1)
    stages = {s.stage for s in record.stages}
    assert {"claim", "probe", "plan", "transcribe", "diarize", "merge", "export-json", "export-txt",
            "metrics"} <= stages
    assert all(s.status == "success" and s.seconds > 0 for s in record.stages)
    assert any(str(out / "jfk.json") in str(o) or o.endswith("jfk/jfk.json") for o in record.outputs)


def test_ami_excerpt_run_finds_several_speakers(dagbag, home):
    from tasks.result import Transcript

    path = drop(home, corpus_file("ami/trn04.flac"))
    conf = {"path": str(path), "formats": ["json", "txt", "srt", "rttm", "csv"], "csv_bom": True,
            "speaker_names": {"SPEAKER_00": "Ann Example"}}
    state, run = run_dag(dagbag, conf)
    assert state == "success", run
    out = home / "outbox" / "trn04"
    transcript = Transcript.load(out / "trn04.json")
    assert len(transcript.speakers) >= 2 and transcript.turns
    assert {p.suffix for p in out.iterdir()} >= {".json", ".txt", ".srt", ".rttm", ".csv"}
    assert [ti for ti, s in run["states"].items() if ti[0] == "export" and s == "success"].__len__() == 5
    # the run's export choices reach the writers
    table = (out / "trn04.csv").read_bytes()
    assert table.startswith(b"\xef\xbb\xbf") and b"Ann Example" in table and b"SPEAKER_00" not in table


def test_same_content_again_is_skipped_and_recorded(dagbag, home, monkeypatch):
    monkeypatch.setenv("SECURETRANSCRIBE_DIARIZE", "0")
    first = drop(home, corpus_file("speech/jfk.flac"), "first.flac")
    assert run_dag(dagbag, {"path": str(first)})[0] == "success"
    second = drop(home, corpus_file("speech/jfk.flac"), "second name.flac")
    state, run = run_dag(dagbag, {"path": str(second)})
    assert state == "success"
    assert run["states"][("transcribe", -1)] == "skipped"
    assert not (home / "outbox" / "second name").exists()
    assert list((home / "archive").glob("*/*/*/second name.flac"))  # nothing lost
    assert metrics_file(home, run["run_id"]).status == "skipped"
    # asked to reprocess: it runs again
    third = drop(home, corpus_file("speech/jfk.flac"), "third.flac")
    state, run = run_dag(dagbag, {"path": str(third), "reprocess": True})
    assert state == "success" and run["states"][("transcribe", -1)] == "success"


def test_non_audio_goes_to_quarantine_with_a_reason(dagbag, home):
    bad = home / "inbox" / "minutes.wav"
    bad.write_text("these are the minutes, not a recording\n" * 10)
    state, run = run_dag(dagbag, {"path": str(bad)})
    assert state == "failed"
    folder = home / "quarantine" / run["run_id"]
    assert (folder / "minutes.wav").read_text().startswith("these are the minutes")
    reason = json.loads((folder / "reason.json").read_text())
    assert reason["stage"] == "probe" and reason["error_type"] == "InvalidAudio"
    assert "not an audio file" in reason["message"]
    assert run["states"][("probe", -1)] == "failed"  # failed once: bad input is not retried
    assert metrics_file(home, run["run_id"]).status == "quarantined"


def test_gpu_oom_fault_injection_shrinks_then_falls_back_and_succeeds(dagbag, home, monkeypatch):
    from tasks.result import Transcript

    monkeypatch.setenv("SECURETRANSCRIBE_FAULT_OOM_ABOVE_S", "10")
    monkeypatch.setenv("SECURETRANSCRIBE_FAULT_OOM_DIARIZATION", "1")
    path = drop(home, corpus_file("ami/trn03.flac"))
    state, run = run_dag(dagbag, {"path": str(path)})
    assert state == "success", run
    transcript = Transcript.load(home / "outbox" / "trn03" / "trn03.json")
    ooms = [a for a in transcript.attempts if a.outcome == "oom"]
    assert {a.stage for a in ooms} == {"transcribe", "diarize"}
    batches = [a.batch_size for a in ooms if a.stage == "transcribe"]
    assert batches[:4] == [8, 4, 2, 1]
    assert all(a.cpu_fallback for a in transcript.attempts if a.outcome == "ok")
    assert transcript.segments
    rows = {s.stage: s for s in metrics_file(home, run["run_id"]).stages}
    assert rows["transcribe"].oom_shrunk and rows["transcribe"].cpu_fallback
    assert rows["diarize"].oom_retries >= 1


def test_cli_and_dag_give_the_same_transcript_and_record_the_same_stages(dagbag, home, tmp_path):
    """The CLI and the processing DAG execute the same stage list: same transcript, same stage names."""
    from tasks.cli import main
    from tasks.stages import STAGES, stage_sort_key

    source = corpus_file("ami/trn04.flac")
    assert main(["transcribe", str(source), "--out", str(tmp_path / "cli"), "--formats", "json"]) == 0
    cli = json.loads((tmp_path / "cli" / "trn04.json").read_text(encoding="utf-8"))
    state, run = run_dag(dagbag, {"path": str(drop(home, source)), "formats": ["json"]})
    assert state == "success", run
    dag = json.loads((home / "outbox" / "trn04" / "trn04.json").read_text(encoding="utf-8"))

    def content(t: dict) -> dict:
        return {k: t[k] for k in ("segments", "speakers", "turns", "language", "duration", "model", "options",
                                  "source")}

    assert cli["segments"] and len(cli["speakers"]) >= 2
    assert content(cli) == content(dag)

    def analysis(t: dict) -> list[str]:
        return sorted((k for k in t["timings"] if not k.startswith("export-")), key=stage_sort_key)

    expected = [s.name for s in STAGES if s.analysis or s.name == "claim"]
    assert analysis(cli) == analysis(dag) == expected
    recorded = {s.stage for s in metrics_file(home, run["run_id"]).stages}
    assert set(expected) <= recorded and "export-json" in recorded
