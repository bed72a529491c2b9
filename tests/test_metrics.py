"""Metrics database: migrations on empty SQLite and PostgreSQL databases, idempotent recording, purge."""

from __future__ import annotations

import subprocess
import sys
import types
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import inspect, text

from tasks.metrics import MetricsStore, StageRecorder, stage_fields_from_attempts
from tasks.metrics.models import SEARCH_INDEXES, VERSION_TABLE, Base
from tasks.result import Attempt
from tests.conftest import ROOT
from tests.servers import postgres_or_skip

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
SHA = "ab" * 32


@pytest.fixture(scope="module")
def pg_server():
    with postgres_or_skip() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'metrics.db'}"
    return request.getfixturevalue("pg_server").create_database(f"metrics_{uuid.uuid4().hex[:8]}")


@pytest.fixture
def store(url):
    s = MetricsStore(url)
    s.upgrade()
    yield s
    s.close()


def test_migrations_create_schema_on_empty_database(url):
    store = MetricsStore(url)
    assert store.current_revision() is None
    store.upgrade()
    assert store.current_revision() == store.head_revision() == "0002"
    names = set(inspect(store.engine).get_table_names())
    assert {"transcription_files", "transcription_stage_attempts", VERSION_TABLE} <= names
    store.upgrade()  # at head: a no-op
    store.downgrade("base")
    assert "transcription_files" not in inspect(store.engine).get_table_names()
    store.upgrade()
    assert store.counts() == {"files": 0, "stage_attempts": 0}
    store.close()


def test_migrations_match_the_models(store):
    """The shipped migration creates exactly what the models describe (autogenerate finds nothing)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={
            "compare_type": True, "version_table": VERSION_TABLE,
            "include_name": lambda name, type_, parents: (name in Base.metadata.tables if type_ == "table"
                                                          else name not in SEARCH_INDEXES)})
        assert compare_metadata(ctx, Base.metadata) == []


def test_record_a_run_with_retries(store):
    run = "manual__2026-11-20T09:00:00+00:00"
    store.record_file(run, status="running", file_name="meeting.flac", sha256=SHA, audio_duration=600.0)
    store.record_stage(run, "probe", 1, start=T0, end=T0 + timedelta(seconds=2), audio_seconds=600.0)
    # transcribe: try 1 dies (worker lost), try 2 shrinks after a GPU OOM and succeeds; the task
    # of try 2 writes its row twice (running, then finished): still one row per try.
    store.record_stage(run, "transcribe", 1, start=T0 + timedelta(seconds=2), end=T0 + timedelta(seconds=12),
                       status="failed", error="WorkerLost: killed", audio_seconds=600.0, device="cuda")
    store.record_stage(run, "transcribe", 2, start=T0 + timedelta(seconds=20), audio_seconds=600.0)
    store.record_stage(run, "transcribe", 2, start=T0 + timedelta(seconds=20), end=T0 + timedelta(seconds=50),
                       audio_seconds=600.0, chunk_s=120.0, batch_size=4, oom_retries=2, peak_rss_mb=1500.0,
                       peak_gpu_mb=3000.0, device="cuda", detail={"chunks": 5})
    store.record_stage(run, "diarize", 1, start=T0.timestamp() + 50, end=T0.timestamp() + 62.5,
                       audio_seconds=600.0, cpu_fallback=True, device="cpu")
    store.record_file(run, status="failed", error="diarize: boom")
    store.record_file(run, status="success", language="en", speakers=3, model="base", device="cuda",
                      compute_type="float16", outputs=["meeting/meeting.json", "meeting/meeting.txt"])

    assert store.counts() == {"files": 1, "stage_attempts": 4}
    f = store.file(run)
    assert f is not None
    assert (f.file_name, f.sha256, f.audio_duration, f.language, f.speakers) == ("meeting.flac", SHA, 600.0, "en", 3)
    assert (f.status, f.error, f.model, f.compute_type) == ("success", None, "base", "float16")
    assert f.outputs == ["meeting/meeting.json", "meeting/meeting.txt"]
    assert [(s.stage, s.try_number, s.status) for s in f.stages] == [
        ("probe", 1, "success"), ("transcribe", 1, "failed"), ("transcribe", 2, "success"), ("diarize", 1, "success")]
    decode, t1, t2, diarize = f.stages
    assert decode.seconds == pytest.approx(2.0) and decode.rtf == pytest.approx(300.0)
    assert t1.error == "WorkerLost: killed" and t1.rtf == pytest.approx(60.0)
    assert t2.end == T0 + timedelta(seconds=50) and t2.seconds == pytest.approx(30.0) and t2.rtf == pytest.approx(20.0)
    assert (t2.chunk_s, t2.batch_size, t2.oom_shrunk, t2.oom_retries) == (120.0, 4, True, 2)
    assert (t2.peak_rss_mb, t2.peak_gpu_mb, t2.detail) == (1500.0, 3000.0, {"chunks": 5})
    assert diarize.start == T0 + timedelta(seconds=50) and diarize.seconds == pytest.approx(12.5)
    assert diarize.cpu_fallback and not diarize.oom_shrunk
    assert f.last_tries()["transcribe"].try_number == 2
    assert f.wall_seconds == pytest.approx(2 + 30 + 12.5)
    assert store.stage_attempts(run_id=run)[-1].stage == "diarize"
    assert [x.run_id for x in store.recent_files(10)] == [run]
    assert store.files(since=datetime.now(UTC) + timedelta(hours=1)) == []


def test_record_file_keeps_unset_fields_and_validates(store):
    store.record_file("r", status="running", file_name="a.wav", sha256=SHA)
    store.record_file("r", status="quarantined", error="InvalidAudio: not audio")
    f = store.file("r")
    assert (f.file_name, f.sha256, f.status, f.error) == ("a.wav", SHA, "quarantined", "InvalidAudio: not audio")
    with pytest.raises(ValueError):
        store.record_file("r", status="done")
    with pytest.raises(ValueError):
        store.record_stage("r", "probe", 1, start=T0, status="ok")


def test_purge_removes_a_files_rows(store):
    for run, sha in (("r1", SHA), ("r2", SHA), ("r3", "cd" * 32)):
        store.record_file(run, status="success", file_name=f"{run}.wav", sha256=sha)
        store.record_stage(run, "probe", 1, start=T0, end=T0 + timedelta(seconds=1))
    assert store.purge(SHA) == 2
    assert store.counts() == {"files": 1, "stage_attempts": 1}
    assert store.file("r3") is not None and store.file("r1") is None
    assert store.purge(SHA) == 0


def test_stage_recorder_records_success_and_failure(store):
    with StageRecorder(store, "r", "probe", 1, audio_seconds=30.0, strict=True) as rec:
        inside = store.stage_attempts(run_id="r")
        buf = bytearray(64 * 1024 * 1024)
        rec.update(device="cpu")
    del buf
    assert [(s.status, s.end) for s in inside] == [("running", None)]
    with pytest.raises(RuntimeError, match="boom"):
        with StageRecorder(store, "r", "transcribe", 3, audio_seconds=30.0, strict=True) as rec:
            rec.add_attempts([Attempt(stage="transcribe", device="cuda", outcome="oom", chunk_s=240, batch_size=8),
                              Attempt(stage="transcribe", device="cuda", outcome="ok", chunk_s=240, batch_size=4)])
            raise RuntimeError("boom")
    decode, transcribe = store.stage_attempts(run_id="r")
    assert decode.status == "success" and decode.device == "cpu" and decode.seconds > 0
    assert decode.rtf == pytest.approx(30.0 / decode.seconds)
    assert decode.peak_rss_mb >= 64 and decode.peak_gpu_mb is None
    assert (transcribe.status, transcribe.try_number, transcribe.error) == ("failed", 3, "RuntimeError: boom")
    assert (transcribe.batch_size, transcribe.oom_retries, transcribe.oom_shrunk) == (4, 1, True)


def test_stage_recorder_never_fails_the_task_on_database_errors(tmp_path, caplog):
    broken = MetricsStore(f"sqlite:///{tmp_path / 'never-migrated.db'}")  # no tables
    with StageRecorder(broken, "r", "probe", 1) as rec:
        pass
    assert rec.seconds is not None and "could not record stage" in caplog.text


def test_stage_recorder_reads_cuda_peak_from_torch(store, monkeypatch):
    calls: list[str] = []
    cuda = types.SimpleNamespace(
        is_available=lambda: True, is_initialized=lambda: True, device_count=lambda: 2,
        reset_peak_memory_stats=lambda i: calls.append(f"reset{i}"),
        max_memory_allocated=lambda i: (512 + 512 * i) * 1024 * 1024,
    )
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    with StageRecorder(store, "r", "diarize", 1, strict=True):
        pass
    assert calls == ["reset0", "reset1"]
    assert store.stage_attempts(run_id="r")[0].peak_gpu_mb == 1024.0


def test_stage_fields_from_attempts():
    attempts = [
        Attempt(stage="transcribe", device="cuda", outcome="oom", chunk_s=240, batch_size=8).__dict__,
        Attempt(stage="transcribe", device="cuda", outcome="oom", chunk_s=240, batch_size=4),
        Attempt(stage="transcribe", device="cpu", outcome="ok", chunk_s=120, batch_size=1, cpu_fallback=True),
        Attempt(stage="diarize", device="cuda", outcome="ok"),
    ]
    assert stage_fields_from_attempts(attempts, "transcribe") == {
        "chunk_s": 120, "batch_size": 1, "device": "cpu", "oom_shrunk": True, "oom_retries": 2, "cpu_fallback": True}
    assert stage_fields_from_attempts(attempts, "merge") == {}


def test_concurrent_upgrades_from_several_processes(url):
    code = "import sys; from tasks.metrics import MetricsStore; MetricsStore(sys.argv[1]).upgrade()"
    procs = [subprocess.Popen([sys.executable, "-c", code, url], cwd=ROOT, stderr=subprocess.PIPE, text=True,
                              env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}) for _ in range(4)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    store = MetricsStore(url)
    assert store.current_revision() == "0002"
    store.close()


def test_postgres_database_shared_with_another_alembic_user(pg_server):
    """Airflow's metadata database has its own ``alembic_version``: ours lives beside it untouched."""
    url = pg_server.create_database(f"shared_{uuid.uuid4().hex[:8]}")
    store = MetricsStore(url)
    with store.engine.begin() as conn:
        conn.execute(text("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)"))
        conn.execute(text("INSERT INTO alembic_version VALUES ('airflow_rev')"))
    store.upgrade()
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "airflow_rev"
    assert store.current_revision() == "0002"
    store.close()


def test_default_url_comes_from_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("SECURETRANSCRIBE_HOME", str(tmp_path))
    monkeypatch.delenv("SECURETRANSCRIBE_METRICS_URL", raising=False)
    store = MetricsStore()
    store.upgrade()
    assert (tmp_path / "metrics.db").is_file()
    store.close()
    assert MetricsStore("postgresql://u:p@h/db").url == "postgresql+psycopg://u:p@h/db"


def test_concurrent_writers(url):
    """Several task processes writing at once (SQLite: WAL + busy timeout) lose and duplicate nothing."""
    MetricsStore(url).upgrade()
    code = """
import sys
from tasks.metrics import MetricsStore
store, worker = MetricsStore(sys.argv[1]), sys.argv[2]
for i in range(20):
    run = f"run-{i % 5}"
    store.record_file(run, status="running", file_name=f"{run}.wav")
    store.record_stage(run, f"stage-{worker}", 1, start=1.8e9 + i, end=1.8e9 + i + 1, audio_seconds=10.0)
    store.record_stage(run, "shared", 1, start=1.8e9, end=1.8e9 + i, detail={"worker": worker})
"""
    procs = [subprocess.Popen([sys.executable, "-c", code, url, str(w)], cwd=ROOT, stderr=subprocess.PIPE, text=True,
                              env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}) for w in range(4)]
    errors = [p.communicate(timeout=180)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    store = MetricsStore(url)
    assert store.counts() == {"files": 5, "stage_attempts": 5 * 4 + 5}
    store.close()
