"""Defaults that keep the promise: every export format, and `make demo` follows the settings in effect."""

from __future__ import annotations

import os
import subprocess

from tasks.settings import ALL_FORMATS, Settings
from tests.airflow_harness import ROOT


def test_every_export_format_by_default_and_the_variable_narrows():
    assert Settings.from_env(environ={}).formats == ALL_FORMATS
    assert Settings.from_env(environ={"SECURETRANSCRIBE_FORMATS": "srt"}).formats == ("srt",)


def test_make_demo_drops_into_the_data_root_and_names_the_port(tmp_path):
    env = {**os.environ, "SECURETRANSCRIBE_HOME": str(tmp_path / "home"), "SECURETRANSCRIBE_PORT": "9321"}
    done = subprocess.run(["make", "-s", "demo"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "home" / "inbox").iterdir()) == ["jfk.flac", "trñ00.flac"]
    assert "http://127.0.0.1:9321/" in done.stdout
    assert f"{tmp_path / 'home' / 'inbox'}/" in done.stdout


def test_heavy_task_slots_one_per_gpu_else_a_share_of_the_cores():
    from tasks.devices import heavy_task_slots

    assert heavy_task_slots(gpus=2, cores=16) == 2  # one task per GPU, whatever the cores
    assert heavy_task_slots(requested=3, gpus=0, cores=16) == 3
    assert [heavy_task_slots(gpus=0, cores=c) for c in (1, 2, 4, 8, 16, 32)] == [1, 2, 2, 2, 4, 8]


def test_cpu_only_pool_and_threads_follow_the_knobs(tmp_path, monkeypatch):
    import json

    import tasks.devices
    from scripts.airflow_supervisor import pools_file, split_cpu

    monkeypatch.setattr(tasks.devices, "cuda_device_count", lambda: 0)
    monkeypatch.setattr(tasks.devices, "usable_cores", lambda: 8)
    (tmp_path / "airflow").mkdir()
    settings = Settings.from_env(environ={"SECURETRANSCRIBE_HOME": str(tmp_path),
                                          "SECURETRANSCRIBE_CPU_HEAVY_TASKS": "4"})
    assert json.loads(pools_file(settings).read_text())["gpu"]["slots"] == 4
    monkeypatch.setattr("scripts.airflow_supervisor.cuda_device_count", lambda: 0)
    assert split_cpu(settings).cpu_threads == 2  # 8 cores, 4 heavy tasks
    assert split_cpu(settings.replace(cpu_threads=3)).cpu_threads == 3  # an explicit value stays
    assert split_cpu(Settings.from_env(environ={"SECURETRANSCRIBE_HOME": str(tmp_path)})).cpu_threads == 4  # 8 // 2
