"""Archive backfill as a library: partitions, what is listed, refused and ignored, run ids, settings."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest

from tasks.archive import archive_run_id, interval_days, list_partition, partition_requests
from tasks.settings import Settings

UTC = dt.UTC


def day(y: int, m: int, d: int, tz: dt.tzinfo = UTC) -> dt.datetime:
    return dt.datetime(y, m, d, tzinfo=tz)


def write(path: Path, data: bytes = b"RIFF fake audio") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env(environ={}, home=tmp_path / "home", backfill_root=tmp_path / "archive", model="tiny.en")


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    write(root / "2024/02/29/before.wav", b"before")
    write(root / "2024/03/01/a.flac", b"a")
    write(root / "2024/03/01/sub/b.mp3", b"b")
    write(root / "2024/03/01/.hidden.wav", b"hidden")
    write(root / "2024/03/01/~$lock.wav", b"lock")
    write(root / "2024/03/01/upload.wav.part", b"partial")
    write(root / "2024/03/01/notes.txt", b"notes")
    write(root / "2024/03/01/.git/x.wav", b"hidden folder")
    write(root / "2024/03/02/c.WAV", b"c")
    write(tmp_path / "elsewhere" / "secret.wav", b"outside")
    (root / "2024/03/01/link-out.wav").symlink_to(tmp_path / "elsewhere" / "secret.wav")
    (root / "2024/03/01/link-in.wav").symlink_to(root / "2024/03/02/c.WAV")
    (root / "2024/03/01/dir-out").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    return root


def test_interval_days():
    assert interval_days(day(2024, 3, 1), day(2024, 3, 2)) == [dt.date(2024, 3, 1)]
    assert len(interval_days(day(2024, 2, 1), day(2024, 3, 1))) == 29
    assert interval_days(day(2024, 3, 1), day(2024, 3, 1) + dt.timedelta(hours=1)) == [dt.date(2024, 3, 1)]
    # a daily interval in Berlin time starts at 23:00 UTC the day before
    berlin = dt.datetime(2024, 3, 1, tzinfo=dt.timezone(dt.timedelta(hours=1))).astimezone(UTC)
    assert interval_days(berlin, berlin + dt.timedelta(days=1), "Europe/Berlin") == [dt.date(2024, 3, 1)]


def test_path_mode_lists_the_interval_partition_only(settings, archive):
    part = list_partition(settings, day(2024, 3, 1), day(2024, 3, 2))
    assert part.labels == ["2024/03/01"]
    listed = {f.relative: f for f in part.files}
    # link-in.wav points inside the archive: its target is processed (c.WAV of another day)
    assert set(listed) == {"2024/03/01/a.flac", "2024/03/01/sub/b.mp3", "2024/03/01/link-in.wav"}
    assert listed["2024/03/01/link-in.wav"].path == archive / "2024/03/02/c.WAV"
    assert all(f.partition == "2024/03/01" for f in part.files)
    refused = dict(part.refused)
    assert "leaving the archive" in refused["2024/03/01/link-out.wav"]
    assert "not followed" in refused["2024/03/01/dir-out"]
    assert part.ignored == 4  # .hidden.wav, ~$lock.wav, upload.wav.part, notes.txt (.git/ is not entered)
    assert list_partition(settings, day(2024, 3, 5), day(2024, 3, 6)).files == []


def test_monthly_pattern_and_interval(settings, archive):
    write(archive / "2024-03" / "m.wav")
    monthly = settings.replace(backfill_pattern="{date:%Y-%m}")
    part = list_partition(monthly, day(2024, 3, 1), day(2024, 4, 1))
    assert part.labels == ["2024-03"] and [f.relative for f in part.files] == ["2024-03/m.wav"]


def test_partition_folder_leaving_the_root_is_refused(settings, archive, tmp_path):
    (archive / "2024/03/07").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    part = list_partition(settings, day(2024, 3, 7), day(2024, 3, 8))
    assert part.files == [] and part.refused == [("2024/03/07", "the partition folder is a link leaving the archive")]


def test_mtime_mode_takes_files_of_a_flat_folder_by_modification_time(settings, tmp_path):
    root = tmp_path / "flat"
    for name, when in (("old.wav", day(2024, 2, 29)), ("one.wav", day(2024, 3, 1) + dt.timedelta(hours=23)),
                       ("two.m4a", day(2024, 3, 1)), ("next.wav", day(2024, 3, 2))):
        os.utime(write(root / name), (when.timestamp(), when.timestamp()))
    flat = settings.replace(backfill_root=root, backfill_mode="mtime")
    part = list_partition(flat, day(2024, 3, 1), day(2024, 3, 2))
    assert sorted(f.relative for f in part.files) == ["one.wav", "two.m4a"]
    assert {f.partition for f in part.files} == {"2024-03-01"}


def test_run_ids_are_deterministic_and_follow_content_and_options(settings, archive):
    start, end = day(2024, 3, 1), day(2024, 3, 2)
    first = partition_requests(settings, start, end)
    assert first == partition_requests(settings, start, end)
    ids = [r["trigger_run_id"] for r in first]
    assert len(set(ids)) == 3
    assert all(i.startswith("archive__2024_03_01__") for i in ids)
    a = next(r for r in first if r["conf"]["path"].endswith("a.flac"))
    assert a["conf"] == {"path": str(archive / "2024/03/01/a.flac"),
                         "sha256": "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"}
    assert "__a__ca978112ca_" in a["trigger_run_id"]
    # another model: new runs (the ledger key differs); the options travel to the processing runs
    base = partition_requests(settings, start, end, {"model": "base", "language": None})
    assert not {r["trigger_run_id"] for r in base} & set(ids)
    assert all(r["conf"]["model"] == "base" and "language" not in r["conf"] for r in base)
    # changed content: a new run for that file only
    write(archive / "2024/03/01/a.flac", b"a, edited")
    edited = [r["trigger_run_id"] for r in partition_requests(settings, start, end)]
    assert len(set(edited) & set(ids)) == 2


def test_reprocess_gives_one_new_run_per_archive_run(settings, archive):
    start, end = day(2024, 3, 1), day(2024, 3, 2)
    plain = {r["trigger_run_id"] for r in partition_requests(settings, start, end)}
    again = partition_requests(settings, start, end, {"reprocess": True}, nonce="backfill__2024-03-01")
    assert all(r["conf"]["reprocess"] is True for r in again)
    ids = {r["trigger_run_id"] for r in again}
    assert not ids & plain
    assert ids == {r["trigger_run_id"] for r in partition_requests(settings, start, end, {"reprocess": True},
                                                                   nonce="backfill__2024-03-01")}


def test_a_file_quarantined_before_gets_a_retry_run(settings, archive):
    start, end = day(2024, 3, 1), day(2024, 3, 2)
    reqs = partition_requests(settings, start, end)
    failed = reqs[0]["trigger_run_id"]
    write(settings.work / failed / "final.json", json.dumps({"outcome": "quarantined"}).encode())
    write(settings.work / reqs[1]["trigger_run_id"] / "final.json", json.dumps({"outcome": "archived"}).encode())
    again = [r["trigger_run_id"] for r in partition_requests(settings, start, end)]
    assert again == [f"{failed}_r2", *[r["trigger_run_id"] for r in reqs[1:]]]


def test_run_id_is_a_valid_airflow_run_id(settings):
    import re

    from tasks.archive import ArchiveFile

    f = ArchiveFile(Path("/x/Réunion d'équipe (1).flac"), "2024/03/01/Réunion d'équipe (1).flac", "2024/03/01", 1, 1)
    run_id = archive_run_id(f, "f" * 64, "k" * 16)
    assert re.fullmatch(r"[A-Za-z0-9_.~:+-]+", run_id) and len(run_id) < 250
    assert "Reunion_d_equipe_1" in run_id


def test_the_root_must_not_overlap_the_data_folders(settings, tmp_path):
    settings.inbox.mkdir(parents=True)
    with pytest.raises(ValueError, match="overlaps the inbox"):
        list_partition(settings.replace(backfill_root=settings.home), day(2024, 3, 1), day(2024, 3, 2))
    with pytest.raises(ValueError, match="overlaps the inbox"):
        list_partition(settings.replace(backfill_root=settings.inbox), day(2024, 3, 1), day(2024, 3, 2))
    with pytest.raises(FileNotFoundError):
        list_partition(settings.replace(backfill_root=tmp_path / "missing"), day(2024, 3, 1), day(2024, 3, 2))


def test_backfill_settings_from_the_environment(tmp_path):
    s = Settings.from_env(environ={
        "SECURETRANSCRIBE_BACKFILL_ROOT": str(tmp_path), "SECURETRANSCRIBE_BACKFILL_MODE": "mtime",
        "SECURETRANSCRIBE_BACKFILL_PATTERN": "{year}/{month:02d}", "SECURETRANSCRIBE_BACKFILL_EXTENSIONS": ".WAV flac",
        "SECURETRANSCRIBE_BACKFILL_CATCHUP": "yes", "SECURETRANSCRIBE_BACKFILL_START_DATE": "2019-06-01",
        "SECURETRANSCRIBE_BACKFILL_TIMEZONE": "Europe/Berlin", "SECURETRANSCRIBE_BACKFILL_MAX_ACTIVE_RUNS": "2",
    })
    assert (s.backfill_root, s.backfill_mode, s.backfill_extensions) == (tmp_path, "mtime", ("wav", "flac"))
    assert s.backfill_catchup and s.backfill_start_date == "2019-06-01" and s.backfill_max_active_runs == 2
    assert Settings.from_env(environ=s.as_env()) == s
    defaults = Settings.from_env(environ={})
    assert defaults.backfill_root is None and defaults.backfill_pattern == "{year:04d}/{month:02d}/{day:02d}"


@pytest.mark.parametrize(("name", "value", "message"), [
    ("SECURETRANSCRIBE_BACKFILL_MODE", "ctime", "BACKFILL_MODE"),
    ("SECURETRANSCRIBE_BACKFILL_PATTERN", "{year}/{week}", "BACKFILL_PATTERN"),
    ("SECURETRANSCRIBE_BACKFILL_PATTERN", "../{year}", "relative folder"),
    ("SECURETRANSCRIBE_BACKFILL_TIMEZONE", "Mars/Olympus", "unknown time zone"),
    ("SECURETRANSCRIBE_BACKFILL_START_DATE", "yesterday", "YYYY-MM-DD"),
    ("SECURETRANSCRIBE_BACKFILL_MAX_ACTIVE_RUNS", "0", "at least 1"),
])
def test_bad_backfill_settings_name_the_variable(name, value, message):
    with pytest.raises(ValueError, match=message):
        Settings.from_env(environ={name: value})


def test_archive_dags_take_their_settings(tmp_path):
    """Parse the two archive DAG files (fresh interpreter, settings from the environment) and inspect them."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = """
import json, sys
sys.path.insert(0, sys.argv[1] + "/dags")
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[2])
bag2 = DagBag(dag_folder=sys.argv[3])
a, b = bag.dags["securetranscribe_archive"], bag2.dags["securetranscribe_process_batch"]
trigger = a.get_task("process_files")
print(json.dumps({
    "errors": {**bag.import_errors, **bag2.import_errors},
    "timetable": type(a.timetable).__name__, "tz": str(a.timetable.timezone), "catchup": a.catchup,
    "start": a.start_date.isoformat(), "tasks": sorted(a.task_dict),
    "trigger": {k: trigger.partial_kwargs.get(k) for k in ("trigger_dag_id", "skip_when_already_exists",
                "wait_for_completion", "deferrable", "retries", "logical_date")},
    "batch_max_active_runs": b.max_active_runs,
    "batch_weights": sorted({(t.priority_weight, str(t.weight_rule)) for t in b.tasks}),
}))
"""
    env = {**os.environ, "SECURETRANSCRIBE_HOME": str(tmp_path), "SECURETRANSCRIBE_BACKFILL_CATCHUP": "1",
           "SECURETRANSCRIBE_BACKFILL_START_DATE": "2019-06-01", "SECURETRANSCRIBE_BACKFILL_TIMEZONE": "Europe/Berlin",
           "SECURETRANSCRIBE_BACKFILL_MAX_ACTIVE_RUNS": "3", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code, str(ROOT), str(ROOT / "dags" / "securetranscribe_archive.py"),
                           str(ROOT / "dags" / "securetranscribe_process_batch.py")],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads(done.stdout.strip().splitlines()[-1])
    assert info["errors"] == {}
    assert info["timetable"] == "CronDataIntervalTimetable" and info["tz"] == "Europe/Berlin"
    assert info["catchup"] is True and info["start"].startswith("2019-05-31T22:00:00")  # midnight in Berlin
    assert info["tasks"] == ["list_partition", "process_files"]
    assert info["trigger"] == {"trigger_dag_id": "securetranscribe_process_batch", "skip_when_already_exists": True,
                               "wait_for_completion": True, "deferrable": True, "retries": 0, "logical_date": None}
    assert info["batch_max_active_runs"] == 3
    assert info["batch_weights"] == [[1, "absolute"]]
