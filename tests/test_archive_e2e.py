"""Backfilling an archive with the real Airflow (scheduler, triggerer, dag-processor, api-server; LocalExecutor).

A synthetic archive over several dates: `airflow backfill create` over a range gives exactly one result per
file and leaves other dates and every archive file untouched; the same range again starts nothing new;
with one gpu slot, an inbox file's GPU work goes before queued archive files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import urllib.error
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.airflow_harness import Airflow, running_airflow, wait_until
from tests.conftest import corpus_file, write_wav

pytestmark = [pytest.mark.airflow, pytest.mark.slow, pytest.mark.timeout(1800)]
ARCHIVE = "securetranscribe_archive"
BATCH = "securetranscribe_process_batch"
PROCESS = "securetranscribe_process"
TERMINAL = {"success", "failed"}


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def write_clip(audio: np.ndarray, start_s: float, end_s: float, path: Path) -> Path:
    """A 16 kHz mono WAV cut from ``audio``: a short, distinct recording."""
    return write_wav(audio[int(start_s * 16000):int(end_s * 16000)], path)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` with its content hash, size and mtime (links as links)."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        if p.is_symlink():
            out[str(p.relative_to(root))] = ("link", os.readlink(p), st.st_mtime_ns)
        elif p.is_file():
            out[str(p.relative_to(root))] = (hashlib.sha256(p.read_bytes()).hexdigest(), st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def jfk_audio() -> np.ndarray:
    from tasks.audio import decode

    return decode(corpus_file("speech/jfk.flac"))


@pytest.fixture(scope="module")
def archive(tmp_path_factory, jfk_audio) -> Path:
    """Recordings over five dates; a backfill of 2024-03-01..03 must take exactly five of them."""
    tmp = tmp_path_factory.mktemp("archive")
    root = tmp / "recordings"
    day1, day2, day3 = root / "2024/03/01", root / "2024/03/02", root / "2024/03/03"
    day1.mkdir(parents=True)
    shutil.copyfile(corpus_file("speech/jfk.flac"), day1 / "jfk.flac")
    (day1 / "notes.txt").write_text("not a recording")
    (day1 / ".hidden.wav").write_bytes(b"hidden")
    write_clip(jfk_audio, 0, 5, day2 / "meeting b.wav")
    write_clip(jfk_audio, 1, 6, day2 / "sub" / "c.wav")
    (day2 / "upload.wav.part").write_bytes(b"partial")
    write_clip(jfk_audio, 2, 7, day3 / "d.wav")
    shutil.copyfile(corpus_file("speech/jfk.flac"), day3 / "jfk-copy.flac")  # same content as 03-01's jfk.flac
    write_clip(jfk_audio, 0, 3, tmp / "elsewhere" / "private.wav")
    (day3 / "link-out.wav").symlink_to(tmp / "elsewhere" / "private.wav")
    write_clip(jfk_audio, 3, 9, root / "2024/02/29" / "before.wav")
    write_clip(jfk_audio, 4, 9, root / "2024/03/04" / "after.wav")
    return root


@pytest.fixture(scope="module")
def af(tmp_path_factory, archive):
    tmp = tmp_path_factory.mktemp("e2e-archive")
    with running_airflow(tmp, SECURETRANSCRIBE_MODEL="tiny.en", SECURETRANSCRIBE_DIARIZE="0",
                         SECURETRANSCRIBE_INBOX_STABLE_S="1", SECURETRANSCRIBE_BACKFILL_ROOT=str(archive),
                         SECURETRANSCRIBE_FORMATS="txt,json") as airflow:
        wait_until(lambda: dag_exists(airflow, ARCHIVE) and dag_exists(airflow, BATCH), 180, 2.0, "the archive DAGs")
        try:
            yield airflow
        except Exception:
            print(airflow.tail())
            raise


def dag_exists(af: Airflow, dag_id: str) -> bool:
    import urllib.error

    try:
        return not af.api("GET", f"/dags/{dag_id}")["is_paused"]
    except urllib.error.HTTPError:
        return False


def backfill_runs(af: Airflow) -> list[dict]:
    return [r for r in af.runs(ARCHIVE) if r["run_type"] == "backfill"]


def wait_backfills_done(af: Airflow, timeout: float = 900) -> list[dict]:
    """Every backfill of the archive DAG is complete (the scheduler marks it once its runs finished)."""
    def done() -> list[dict] | None:
        fills = af.api("GET", f"/backfills?dag_id={ARCHIVE}")["backfills"]
        return fills if fills and all(b["completed_at"] for b in fills) else None

    return wait_until(done, timeout, 3.0, "the backfill to complete")


def busy_retry(call: Callable[[], Any], timeout: float = 60) -> Any:
    """``call()``, again while the embedded SQLite database is busy.

    A write that meets another writer's commit fails at once in SQLite's WAL mode (a stale snapshot: no
    busy timeout helps); the API answers 503, or 500 when it happens in its audit-log insert. Only for
    calls that are safe to repeat.
    """
    def attempt() -> Any:
        try:
            return call()
        except urllib.error.HTTPError as exc:
            if exc.code not in (500, 503):
                raise
            print(f"API busy ({exc.code}); again")
            return None

    return wait_until(attempt, timeout, 1.0, "the API to accept the write (SQLite busy)")


def db_rows(af: Airflow, sql: str, *args: Any) -> list[tuple]:
    """Rows of a read-only query on the deployment's own SQLite database (what the API answers may lag)."""
    with closing(sqlite3.connect(f"file:{af.home / 'airflow.db'}?mode=ro", uri=True, timeout=60)) as conn:
        return conn.execute(sql, args).fetchall()


def post_backfill(af: Airflow, body: dict) -> None:
    """POST /backfills; an answer that may hide a committed backfill (409, 500, 503) is only printed."""
    try:
        af.api("POST", "/backfills", body)
    except urllib.error.HTTPError as exc:
        if exc.code not in (409, 500, 503):
            raise
        print(f"API answered {exc.code} to the backfill; the database decides")


def create_backfill(af: Airflow, body: dict, runs: int, timeout: float = 300,
                    post: Callable[[], None] | None = None) -> int:
    """``post`` (POST /backfills) until the database holds a new backfill with its ``runs`` runs; its id.

    With SQLite the API can fail a creation half-way: it commits the backfill, then its runs meet another
    writer (503; it tries to delete the backfill again, which can fail too), or everything is committed and
    the audit-log insert fails (500). So the answer decides nothing: the database does. A new backfill with
    every run is ours; one with fewer runs is a remnant, waited for until the scheduler closes it (a 409
    "already running" meanwhile), then the creation is tried again.
    """
    def backfills() -> list[tuple[int, bool]]:
        return db_rows(af, "SELECT id, completed_at IS NOT NULL FROM backfill WHERE dag_id = ?", body["dag_id"])

    before = {bid for bid, _ in backfills()}
    post = post or (lambda: post_backfill(af, body))

    def create() -> int | None:
        for bid, closed in backfills():
            if bid in before:
                if not closed:
                    return None  # an earlier backfill is still open: a creation would be refused
                continue
            made = db_rows(af, "SELECT count(*) FROM backfill_dag_run WHERE backfill_id = ?", bid)[0][0]
            if made == runs:
                return bid
            if not closed:
                return None  # a remnant the scheduler has not closed yet
            before.add(bid)
        post()
        return None

    return wait_until(create, timeout, 1.0, f"a backfill of {body['dag_id']} with its {runs} runs")


def set_gpu_slots(af: Airflow, slots: int) -> None:
    busy_retry(lambda: af.api("PATCH", "/pools/gpu?update_mask=slots",
                              {"pool": "gpu", "slots": slots, "include_deferred": False}))


@contextmanager
def gpu_held(af: Airflow) -> Iterator[None]:
    """No gpu slot inside the block, one after it (also when the block fails: later tests need the pool)."""
    set_gpu_slots(af, 0)
    try:
        yield
    finally:
        set_gpu_slots(af, 1)


def airflow_cli(af: Airflow, *args: str) -> subprocess.CompletedProcess:
    """The `airflow` command of the running deployment (same AIRFLOW_HOME and database)."""
    from scripts.airflow_supervisor import airflow_env
    from tasks.settings import Settings

    env = airflow_env(Settings.from_env(home=af.settings_home), af.port, "127.0.0.1")
    return subprocess.run([str(Path(sys.executable).parent / "airflow"), *args], env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def first_backfill(af, archive):
    before = snapshot(archive)

    def command() -> None:  # the documented way: `airflow backfill create`
        done = airflow_cli(af, "backfill", "create", "--dag-id", ARCHIVE, "--from-date", "2024-03-01",
                           "--to-date", "2024-03-03", "--max-active-runs", "1")
        # SQLite: the command can meet a scheduler write half-way, as the API can (see create_backfill)
        assert done.returncode == 0 or "database is locked" in done.stderr, done.stdout + done.stderr

    create_backfill(af, {"dag_id": ARCHIVE}, runs=3, post=command)
    wait_backfills_done(af)
    return before


def test_backfill_gives_one_result_per_file_and_leaves_the_archive_untouched(af, archive, first_backfill):
    home = af.settings_home
    runs = backfill_runs(af)
    assert sorted(r["logical_date"][:10] for r in runs) == ["2024-03-01", "2024-03-02", "2024-03-03"]
    assert {r["state"] for r in runs} == {"success"}, runs

    batch = {r["dag_run_id"]: r for r in af.runs(BATCH)}
    names = {rid.split("__")[2]: rid for rid in batch}
    assert sorted(names) == ["c", "d", "jfk", "jfk-copy", "meeting_b"], sorted(batch)
    assert {r["state"] for r in batch.values()} == {"success"}
    assert names["jfk"].startswith("archive__2024_03_01__jfk__")
    finals = {n: json.loads((home / "work" / rid / "final.json").read_text()) for n, rid in names.items()}
    # the same content on a later date is found in the ledger: recorded as a duplicate, not transcribed again
    assert finals["jfk-copy"]["outcome"] == "duplicate"
    assert finals["jfk-copy"]["duplicate_of"]["run_id"] == names["jfk"]
    assert {finals[n]["outcome"] for n in ("c", "d", "jfk", "meeting_b")} == {"archived"}
    assert all(f["archived"] == str((archive / rel).resolve()) for f, rel in (
        (finals["jfk"], "2024/03/01/jfk.flac"), (finals["c"], "2024/03/02/sub/c.wav")))

    outbox = home / "outbox"
    assert sorted(p.name for p in outbox.iterdir()) == ["c", "d", "jfk", "meeting b"]
    for stem in ("c", "d", "jfk", "meeting b"):
        assert sorted(p.name for p in (outbox / stem).glob(f"{stem}.*")) == [f"{stem}.json", f"{stem}.txt"]
    assert "country" in (outbox / "jfk" / "jfk.txt").read_text().lower()
    assert len(list((home / "ledger").glob("*.json"))) == 4

    # never moved or modified: every file of the archive (other dates, ignored names, the link) as before
    assert snapshot(archive) == first_backfill
    assert not [p for p in (home / "archive").rglob("*") if p.is_file()]  # archive files are not "archived"
    assert not [p for rid in batch for p in (home / "work" / rid / "input").glob("*")]  # the copies are gone

    archive_tis = [ti for r in runs for ti in af.task_instances(ARCHIVE, r["dag_run_id"])]
    starts = [ti for ti in archive_tis if ti["task_id"] == "process_files"]
    assert sorted(ti["rendered_map_index"] for ti in starts) == sorted(batch)


def test_the_same_range_again_starts_no_new_transcription(af, archive, first_backfill):
    home = af.settings_home
    outputs = snapshot(home / "outbox")
    ledger = snapshot(home / "ledger")
    batch_before = {r["dag_run_id"]: r["end_date"] for r in af.runs(BATCH)}
    first_ends = {r["dag_run_id"]: r["end_date"] for r in backfill_runs(af)}

    create_backfill(af, {"dag_id": ARCHIVE, "from_date": "2024-03-01T00:00:00Z", "to_date": "2024-03-03T00:00:00Z",
                         "max_active_runs": 3, "reprocess_behavior": "completed"}, runs=3)
    wait_backfills_done(af)
    runs = backfill_runs(af)
    assert len(runs) == 3 and {r["state"] for r in runs} == {"success"}
    assert all(when(r["end_date"]) > when(first_ends[r["dag_run_id"]]) for r in runs)  # each interval really ran again
    for r in runs:
        states = {ti["state"] for ti in af.task_instances(ARCHIVE, r["dag_run_id"]) if ti["task_id"] == "process_files"}
        assert states == {"skipped"}  # its runs exist: nothing started
    assert {r["dag_run_id"]: r["end_date"] for r in af.runs(BATCH)} == batch_before
    assert snapshot(home / "outbox") == outputs
    assert snapshot(home / "ledger") == ledger
    assert snapshot(archive) == first_backfill


def test_inbox_file_goes_before_queued_archive_files(af, archive, jfk_audio, first_backfill):
    """One gpu slot, three archive files waiting for it, then an inbox file: the inbox file finishes first."""
    def gpu_states(dag_id: str, run_id: str) -> set[str | None]:
        return {ti["state"] for ti in af.task_instances(dag_id, run_id) if ti["task_id"] in ("transcribe", "diarize")}

    def waiting(dag_id: str, prefix: str, count: int) -> list[str] | None:
        ids = [r["dag_run_id"] for r in af.runs(dag_id) if r["dag_run_id"].startswith(prefix)]
        if len(ids) == count and all(gpu_states(dag_id, i) == {"scheduled"} for i in ids):
            return ids
        return None

    with gpu_held(af):  # every GPU task waits until the four files are queued
        for i, (a, b) in enumerate(((3, 8), (4, 9), (5, 10))):
            write_clip(jfk_audio, a, b, archive / "2024/04/01" / f"batch{i}.wav")
        create_backfill(af, {"dag_id": ARCHIVE, "from_date": "2024-04-01T00:00:00Z", "to_date": "2024-04-01T00:00:00Z"},
                        runs=1)

        batch_ids = wait_until(lambda: waiting(BATCH, "archive__2024_04_01__", 3), 600, 3.0,
                               "three archive files waiting for the gpu pool")
        write_clip(jfk_audio, 6, 11, af.settings_home / "inbox" / "urgent.wav")
        inbox_id = wait_until(lambda: waiting(PROCESS, "file__urgent__", 1), 600, 3.0, "the inbox file waiting")[0]

    def finished() -> list[dict] | None:
        runs = [r for r in af.runs(BATCH) + af.runs(PROCESS) if r["dag_run_id"] in {*batch_ids, inbox_id}]
        return runs if len(runs) == 4 and all(r["state"] in TERMINAL for r in runs) else None

    runs = {r["dag_run_id"]: r for r in wait_until(finished, 900, 3.0, "the four files")}
    assert {r["state"] for r in runs.values()} == {"success"}
    gpu = {rid: [ti for ti in af.task_instances(PROCESS if rid == inbox_id else BATCH, rid)
                 if ti["task_id"] in ("transcribe", "diarize")] for rid in runs}
    assert {ti["priority_weight"] for ti in gpu[inbox_id]} == {100}
    assert {ti["priority_weight"] for rid in batch_ids for ti in gpu[rid]} == {1}
    inbox_gpu_done = max(when(ti["end_date"]) for ti in gpu[inbox_id])
    archive_gpu_start = min(when(ti["start_date"]) for rid in batch_ids for ti in gpu[rid])
    assert inbox_gpu_done <= archive_gpu_start
    assert when(runs[inbox_id]["end_date"]) < min(when(runs[rid]["end_date"]) for rid in batch_ids)


def test_a_backfill_conf_reaches_every_file_of_the_interval(af, archive, jfk_audio, first_backfill):
    """Every per-run option of the archive DAG's conf is passed on: hotwords, diarize, speaker names."""
    wait_backfills_done(af)  # an earlier test's backfill may still be open: create_backfill would reuse it
    write_clip(jfk_audio, 0, 11, archive / "2024/05/01" / "options.wav")
    conf = {"hotwords": "Kennedy", "diarize": False, "speaker_names": {"SPEAKER_00": "JFK"}, "formats": ["json", "txt"]}
    create_backfill(af, {"dag_id": ARCHIVE, "from_date": "2024-05-01T00:00:00Z", "to_date": "2024-05-01T00:00:00Z",
                         "dag_run_conf": conf}, runs=1)
    wait_backfills_done(af)
    [run] = [r for r in af.runs(BATCH) if "options" in r["dag_run_id"]]
    assert run["state"] == "success"
    assert {k: run["conf"][k] for k in conf} == conf
    out = af.settings_home / "outbox" / "options"
    transcript = json.loads((out / "options.json").read_text(encoding="utf-8"))
    assert transcript["options"]["hotwords"] == "Kennedy" and transcript["options"]["diarize"] is False
    assert transcript["diarization"] == {"enabled": False} and transcript["turns"] == []
    assert (out / "options.txt").read_text(encoding="utf-8").startswith("[00:00:00] JFK:")
