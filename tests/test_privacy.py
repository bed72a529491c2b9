"""Privacy: nothing leaves the machine, files are private, nothing is kept after a purge."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, corpus_file

GUARD = '''
import json, os, socket
_log = os.environ["SOCKET_GUARD_LOG"]

def _refuse(what, target):
    with open(_log, "a") as fh:
        fh.write(json.dumps({"what": what, "target": repr(target)}) + "\\n")
    raise OSError(101, f"network access blocked by the test: {what} {target!r}")

_connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex
def connect(self, address):
    if self.family == socket.AF_UNIX:
        return _connect(self, address)
    _refuse("connect", address)
def connect_ex(self, address):
    if self.family == socket.AF_UNIX:
        return _connect_ex(self, address)
    _refuse("connect_ex", address)
socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
socket.getaddrinfo = lambda *a, **k: _refuse("getaddrinfo", a[:2])
socket.create_connection = lambda address, *a, **k: _refuse("create_connection", address)
'''


def _can_unshare_network() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(["unshare", "-n", "true"]).returncode == 0


def test_whole_pipeline_runs_with_the_network_blocked(tmp_path, pyannote_sample):
    """Transcription, diarization and all nine export formats with every outbound socket refused."""
    (tmp_path / "guard").mkdir()
    (tmp_path / "guard" / "sitecustomize.py").write_text(GUARD)
    log = tmp_path / "attempts.jsonl"
    log.touch()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "PYANNOTE_"))}
    env.update(PYTHONPATH=f"{tmp_path / 'guard'}{os.pathsep}{ROOT}", SOCKET_GUARD_LOG=str(log),
               SECURETRANSCRIBE_HOME=str(tmp_path / "home"), SECURETRANSCRIBE_MODEL="base")
    cmd = [sys.executable, "-m", "tasks.cli", "transcribe", str(pyannote_sample), "--out", str(tmp_path / "out"),
           "--formats", "txt,json,csv,srt,vtt,pdf,docx,md,rttm"]
    if _can_unshare_network():
        cmd = ["unshare", "-n", *cmd]  # and no network interface at all, beyond the guard
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    attempts = log.read_text().splitlines()
    assert attempts == [], f"network access attempted: {attempts}"
    written = {p.name for p in (tmp_path / "out").iterdir()}
    assert {f"sample.{k}" for k in ("txt", "json", "csv", "srt", "vtt", "pdf", "docx", "md", "rttm")} <= written
    data = json.loads((tmp_path / "out" / "sample.json").read_text())
    assert len(data["speakers"]) == 2 and data["segments"]


def test_guard_itself_catches_a_connection(tmp_path):
    """The guard is not vacuous: a deliberate connection attempt is recorded and refused."""
    (tmp_path / "sitecustomize.py").write_text(GUARD)
    log = tmp_path / "attempts.jsonl"
    code = ("import urllib.request\ntry:\n    urllib.request.urlopen('http://example.com', timeout=2)\n"
            "except OSError:\n    pass")
    subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(tmp_path),
                   "SOCKET_GUARD_LOG": str(log)}, check=True, timeout=60)
    assert "getaddrinfo" in log.read_text() or "connect" in log.read_text()


def test_cli_outputs_are_private(tmp_path, jfk):
    env = {**os.environ, "SECURETRANSCRIBE_HOME": str(tmp_path / "home"), "SECURETRANSCRIBE_MODEL": "tiny.en"}
    out = tmp_path / "new" / "out"
    subprocess.run([sys.executable, "-m", "tasks.cli", "transcribe", str(jfk), "--out", str(out), "--no-diarize",
                    "--formats", "json,txt,pdf"], env=env, check=True, capture_output=True, timeout=600)
    for path in out.iterdir():
        assert path.stat().st_mode & 0o777 == 0o640, path
    assert out.stat().st_mode & 0o777 == 0o750


def test_purge_removes_outputs_work_ledger_and_metrics(tmp_path, jfk):
    """Process a file through the stages, then purge its sha256: nothing about it remains."""
    from tasks import stages
    from tasks.files import sha256_file
    from tasks.metrics import MetricsStore
    from tasks.purge import purge
    from tasks.settings import Settings
    from tasks.workspace import Workspace

    settings = Settings.from_env(home=tmp_path / "home", model="tiny.en", diarize=False)
    os.environ["SECURETRANSCRIBE_HOME"] = str(settings.home)  # the stages read the environment
    try:
        settings.inbox.mkdir(parents=True)
        drop = settings.inbox / "jfk.flac"
        shutil.copyfile(jfk, drop)
        run_id = "manual__purge-test"
        info = stages.claim_stage(run_id, drop, {"model": "tiny.en", "diarize": False, "formats": ["json", "txt"]},
                                  settings)
        ws = Workspace(info["work"])
        for step in (stages.probe_stage, stages.plan_stage, stages.transcribe_stage, stages.diarize_stage,
                     stages.merge_stage):
            step(ws)
        stages.export_stage(ws, "json")
        stages.export_stage(ws, "txt")
        stages.metrics_stage(ws)
        assert stages.finalize_stage(ws, settings)["outcome"] == "archived"
        sha = sha256_file(jfk)
        store = MetricsStore(settings.metrics_database_url)
        assert store.file(run_id) is not None

        preview = purge(sha, settings, dry_run=True)
        assert preview.outputs and preview.work and (settings.outbox / "jfk").exists()
        report = purge(sha, settings)
        assert report.ledger and report.metrics_files == 1
        assert not (settings.outbox / "jfk").exists() and not ws.root.exists()
        assert store.file(run_id) is None
        assert list(settings.archive.rglob("jfk.flac"))  # originals only on request
        purge(sha, settings, originals=True)
        assert not list(settings.archive.rglob("jfk.flac"))
    finally:
        os.environ.pop("SECURETRANSCRIBE_HOME", None)


def test_purge_command_validates_its_argument(tmp_path):
    env = {**os.environ, "SECURETRANSCRIBE_HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "tasks.cli", "purge", "not-a-hash"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "sha256" in proc.stderr


def test_telemetry_and_hub_are_off_in_every_process():
    # the model libraries never load without the switches: tasks.diarization sets them before pyannote loads
    code = ("import tasks.diarization, os; "
            "print(os.environ['HF_HUB_OFFLINE'], os.environ['PYANNOTE_METRICS_ENABLED'])")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "PYANNOTE_METRICS_ENABLED")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         cwd=ROOT).stdout.split()
    assert out == ["1", "0"]


@pytest.mark.parametrize("path", [Path("dags"), Path("tasks"), Path("plugins")])
def test_no_code_downloads_models(path):
    """No hub download call anywhere in the product's code."""
    pattern = ("hf_hub_download", "snapshot_download", "from_pretrained(\"pyannote/", "download_model(")
    for file in (ROOT / path).rglob("*.py"):
        text = file.read_text(encoding="utf-8")
        assert not any(p in text for p in pattern), file


def test_corpus_fixture_is_real():
    assert corpus_file("speech/jfk.flac").stat().st_size > 100_000


@pytest.mark.parametrize("name", ["a..b", "..", "x/../y", "-rf --leading-dash", "it's \"quoted\"", "trñ00", "é" * 300])
def test_run_ids_from_hostile_names_are_valid_airflow_run_ids(name):
    import re

    from tasks.inbox import Candidate, run_id_for

    run_id = run_id_for(Candidate(f"/inbox/{name}.wav", 10, 1), "ab" * 32)
    assert ".." not in run_id and re.fullmatch(r"[A-Za-z0-9_.~:+-]+", run_id) and len(run_id) <= 250
