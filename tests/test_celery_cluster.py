"""The scaled-out deployment, natively: CeleryExecutor on real PostgreSQL and Redis, two Celery workers.

The topology of docker-compose.airflow.yml without a Docker engine (tests/celery_harness.py):
api-server, scheduler, dag-processor and triggerer as separate processes, a "GPU" worker on queue
``gpu`` (concurrency 1, the gpu pool has 1 slot) and a CPU worker on the default queue. No GPU
here: the gpu worker runs its tasks on CPU, which is what the routing test needs.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.airflow_harness import wait_until
from tests.celery_harness import CeleryCluster, celery_cluster, redis_or_skip, worker_hostname
from tests.conftest import corpus_file, ffmpeg
from tests.servers import postgres_or_skip

pytestmark = [pytest.mark.airflow, pytest.mark.slow, pytest.mark.timeout(1800)]

GPU_TASKS = {"transcribe", "diarize"}
PROCESS = "securetranscribe_process"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("celery")
    with redis_or_skip() as redis, postgres_or_skip() as pg:
        with celery_cluster(
            tmp, pg, redis,
            SECURETRANSCRIBE_MODEL="tiny.en",
            SECURETRANSCRIBE_FORMATS="txt,json",
            SECURETRANSCRIBE_CHUNK_TARGET_S="60",
            SECURETRANSCRIBE_CHUNK_MIN_S="30",
            SECURETRANSCRIBE_CHUNK_MAX_S="80",
        ) as c:
            yield c


def _tis(cluster: CeleryCluster, run_id: str) -> dict[str, dict[str, Any]]:
    """task_id (with the map index for mapped tasks) -> task instance from the REST API."""
    out = {}
    for ti in cluster.task_instances(PROCESS, run_id):
        key = ti["task_id"] if ti.get("map_index", -1) in (-1, None) else f"{ti['task_id']}[{ti['map_index']}]"
        out[key] = ti
    return out


def _describe(cluster: CeleryCluster, runs: list[dict[str, Any]]) -> str:
    lines = []
    for r in runs:
        lines.append(f"{r['dag_run_id']}: {r['state']}")
        for key, ti in sorted(_tis(cluster, r["dag_run_id"]).items()):
            lines.append(f"  {key:14s} {ti['state']!s:10s} queue={ti.get('queue')} host={ti.get('hostname')} "
                         f"try={ti.get('try_number')}")
    return "\n".join(lines) + "\n" + cluster.tail(40)


def test_two_files_run_on_celery_with_gpu_tasks_on_the_gpu_worker(cluster: CeleryCluster) -> None:
    """Drop two corpus files: both runs succeed; transcribe and diarize ran on the gpu-queue worker, the
    rest on the default-queue worker (TI queue and hostname via the REST API); metrics are in PostgreSQL."""
    assert cluster.api("GET", "/pools/gpu")["slots"] == 1  # = the GPU workers (deploy/init_airflow.py)
    files = [corpus_file("speech/jfk.flac"), corpus_file("ami/dev00.flac")]
    inbox = cluster.settings_home / "inbox"
    for f in files:
        part = inbox / f".{f.name}.part"  # hidden while copying, then an atomic rename
        shutil.copyfile(f, part)
        part.rename(inbox / f.name)

    def finished() -> list[dict[str, Any]] | None:
        runs = [r for r in cluster.runs(PROCESS) if r["conf"].get("path", "").endswith((".flac",))
                and Path(r["conf"]["path"]).name in {f.name for f in files}]
        return runs if len(runs) == 2 and all(r["state"] in ("success", "failed") for r in runs) else None

    runs = wait_until(finished, 1200, 3.0, "both processing runs to finish")
    assert all(r["state"] == "success" for r in runs), _describe(cluster, runs)

    for r in runs:
        tis = _tis(cluster, r["dag_run_id"])
        for key, ti in tis.items():
            if ti["state"] != "success":
                continue
            name = key.split("[")[0]
            if name in GPU_TASKS:
                assert ti["queue"] == "gpu" and ti["hostname"] == worker_hostname("gpu"), (key, ti)
            else:
                assert ti["queue"] == "default" and ti["hostname"] == worker_hostname("cpu"), (key, ti)
        assert GPU_TASKS <= {k for k, ti in tis.items() if ti["state"] == "success"}, _describe(cluster, [r])

    # outputs written by the cpu worker from what the gpu worker left in the shared work folder
    for f in files:
        out = cluster.settings_home / "outbox" / f.stem / f"{f.stem}.json"
        assert out.is_file(), f"missing {out}"
        assert json.loads(out.read_text())["segments"], out

    _assert_metrics_in_postgres(cluster, {f.name for f in files})


def _assert_metrics_in_postgres(cluster: CeleryCluster, names: set[str]) -> None:
    from tasks.metrics import MetricsStore

    url = cluster.env["SECURETRANSCRIBE_METRICS_URL"]
    assert url.startswith("postgresql"), url
    with MetricsStore(url) as store:
        assert store.current_revision() == store.head_revision()  # migrated by deploy/init_airflow.py
        rows = {r.file_name: r for r in store.recent_files(100) if r.file_name in names}
    assert set(rows) == names, f"metrics rows for {sorted(rows)}, expected {sorted(names)}"
    for row in rows.values():
        assert row.status == "success", row
        stages = {s.stage for s in row.stages}
        assert {"transcribe", "diarize"} <= stages, stages


def _four_minute_meeting(folder: Path) -> Path:
    """The eight 30 s AMI excerpts joined into one 4-minute file (several 60 s chunks)."""
    excerpts = sorted(corpus_file("ami/dev00.flac").parent.glob("*.flac"))[:8]
    out = folder / "meeting4min.flac"
    inputs = [a for f in excerpts for a in ("-i", str(f))]
    ffmpeg(*inputs, "-filter_complex", f"concat=n={len(excerpts)}:v=0:a=1", "-ac", "1", "-ar", "16000", str(out))
    return out


def test_gpu_worker_killed_mid_transcription_resumes_from_checkpoint(cluster: CeleryCluster, tmp_path: Path) -> None:
    """SIGKILL the gpu worker (its whole process tree, as a crashed node) once the first chunk is
    checkpointed; start it again: Airflow notices the missing heartbeats, retries the task on the
    restarted worker, the retry resumes after the checkpointed chunks, and the run succeeds."""
    audio = _four_minute_meeting(tmp_path)
    run_id = f"celery-kill-{int(time.time())}"
    cluster.trigger(PROCESS, {"path": str(audio), "diarize": False, "formats": ["txt", "json"]}, run_id=run_id)
    work = cluster.settings_home / "work" / run_id

    def first_chunk() -> bool:
        run = next(r for r in cluster.runs(PROCESS) if r["dag_run_id"] == run_id)
        assert run["state"] not in ("success", "failed"), _describe(cluster, [run])
        return any((work / "chunks").glob("chunk-*.json"))

    wait_until(first_chunk, 900, 0.2, "the first checkpointed chunk")
    task_pid = int((work / "transcribe.pid").read_text())
    plan = json.loads((work / "plan.json").read_text()) if (work / "plan.json").is_file() else None
    gpu = cluster.processes["worker-gpu"]
    killed = gpu.kill_tree()
    assert task_pid in killed or not _pid_alive(task_pid), "the transcribing process survived the kill"
    assert not (work / "transcription.json").exists(), "transcription finished before the kill: use a longer file"
    done_before = len(list((work / "chunks").glob("chunk-*.json")))

    cluster.start_worker("gpu")

    def finished() -> dict[str, Any] | None:
        run = next(r for r in cluster.runs(PROCESS) if r["dag_run_id"] == run_id)
        return run if run["state"] in ("success", "failed") else None

    run = wait_until(finished, 900, 3.0, "the interrupted run to finish")
    assert run["state"] == "success", _describe(cluster, [run])

    ti = _tis(cluster, run_id)["transcribe"]
    assert ti["try_number"] >= 2, ti
    assert ti["queue"] == "gpu" and ti["hostname"] == worker_hostname("gpu"), ti

    transcription = json.loads((work / "transcription.json").read_text())
    assert 1 <= transcription["resumed_chunks"] <= done_before, (transcription["resumed_chunks"], done_before)
    assert transcription["try_number"] >= 2
    indexes = [c["index"] for c in transcription["chunks"]]
    assert indexes == list(range(len(indexes))) and len(indexes) >= 3, indexes
    if plan is not None:
        assert len(indexes) == len(plan["spans"])
    starts = [s["start"] for c in transcription["chunks"] for s in c["segments"]]
    assert starts == sorted(starts) and len(starts) == len(set(starts)), "segments doubled or out of order"

    out = json.loads((cluster.settings_home / "outbox" / audio.stem / f"{audio.stem}.json").read_text())
    assert out["segments"] and out["segments"][-1]["end"] > 200.0, "the transcript does not reach the end"
    assert out["duration"] == pytest.approx(240.0, abs=1.0)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
