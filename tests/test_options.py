"""One declaration of every option (tasks/settings.py knobs) and everything derived from it."""

from __future__ import annotations

import argparse
import datetime as dt
from dataclasses import fields
from pathlib import Path

import pytest

from tasks.options import CLI_OPTIONS, KNOBS, OUTPUT_OPTIONS, RUN_OPTIONS, options_key, run_conf, run_overrides
from tasks.settings import ALL_FORMATS, Settings, field_type

PROCESSING_DAGS = ("securetranscribe_process", "securetranscribe_process_batch")


def sample(name: str):
    """A value for a run option that differs from its default."""
    kind = field_type(name)
    default = getattr(Settings.from_env(environ={}), name)
    return {bool: not default, int: 3, float: 2.5, tuple: ("json", "srt"), dict: {"SPEAKER_00": "Diane"},
            str: "tiny.en" if name == "model" else f"{name} value"}[kind]


def test_every_field_is_a_documented_knob():
    for f in fields(Settings):
        assert KNOBS[f.name].help, f"Settings.{f.name} has no help text"
    assert {"model", "language", "hotwords", "initial_prompt", "multilingual", "diarize", "num_speakers",
            "formats", "speaker_names", "csv_bom", "csv_formula_guard", "reprocess"} <= set(RUN_OPTIONS)
    assert set(OUTPUT_OPTIONS) >= {"model", "hotwords", "diarize", "beam_size"}


def test_every_dag_params_every_run_option(dagbag):
    for dag_id in (*PROCESSING_DAGS, "securetranscribe_archive"):
        params = dagbag.dags[dag_id].params
        missing = set(RUN_OPTIONS) - set(params.keys())
        assert not missing, f"{dag_id} has no Param for {sorted(missing)}"
        for name in RUN_OPTIONS:
            assert params.get_param(name).value is None  # unset: the settings' value
            assert params.get_param(name).description == KNOBS[name].help
    # a conf with every option set (as JSON gives it) validates against the params
    params = dagbag.dags["securetranscribe_process"].params
    for name in RUN_OPTIONS:
        value = sample(name)
        value = list(value) if isinstance(value, tuple) else value
        assert params.get_param(name).resolve(value) == value


def _transcribe_parser() -> argparse.ArgumentParser:
    from tasks.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["transcribe"]


def test_every_cli_option_has_a_flag_and_reaches_the_run():
    from tasks.options import cli_settings

    dests = {a.dest for a in _transcribe_parser()._actions}
    assert set(CLI_OPTIONS) <= dests
    assert set(RUN_OPTIONS) - {n for n, k in KNOBS.items() if k.cli_skip} <= dests
    args = _transcribe_parser().parse_args([
        "x.wav", "--model", "tiny.en", "--hotwords", "ComfyUI", "--no-diarize", "--csv-raw", "--csv-bom",
        "--speaker-name", "SPEAKER_00=Diane", "--formats", "json,srt", "--num-speakers", "2", "--multilingual",
        "--batch-size", "4", "--device", "cpu",
    ])
    settings, conf = cli_settings(args, Settings.from_env(environ={}))
    assert (settings.batch_size, settings.device) == (4, "cpu")
    assert conf == {"model": "tiny.en", "hotwords": "ComfyUI", "diarize": False, "csv_formula_guard": False,
                    "csv_bom": True, "speaker_names": {"SPEAKER_00": "Diane"}, "formats": ("json", "srt"),
                    "num_speakers": 2, "multilingual": True}
    with pytest.raises(SystemExit):
        _transcribe_parser().parse_args(["x.wav", "--formats", "txt,exe"])


def test_the_archive_passes_every_run_option_on(tmp_path):
    from tasks.archive import partition_requests

    root = tmp_path / "archive"
    (root / "2024/03/01").mkdir(parents=True)
    (root / "2024/03/01" / "a.wav").write_bytes(b"RIFF not really audio")
    settings = Settings.from_env(environ={"SECURETRANSCRIBE_HOME": str(tmp_path / "home")}, backfill_root=root)
    conf = {name: sample(name) for name in RUN_OPTIONS}
    start = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
    [request] = partition_requests(settings, start, start + dt.timedelta(days=1), conf)
    assert {k: v for k, v in request["conf"].items() if k in RUN_OPTIONS} == conf
    assert run_conf(request["conf"]) == conf


def test_run_overrides_convert_conf_values_and_feed_the_options_key(tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("SPEAKER_01=Ann\n")
    over = run_overrides({"formats": "json, SRT", "speaker_names": str(names), "diarize": "false", "num_speakers": "2",
                          "language": "", "hotwords": None, "path": "/ignored"})
    assert over == {"formats": ("json", "srt"), "speaker_names": {"SPEAKER_01": "Ann"}, "diarize": False,
                    "num_speakers": 2}
    base = Settings.from_env(environ={})
    assert options_key(base.replace(hotwords="ComfyUI")) != options_key(base)
    assert options_key(base.replace(csv_bom=True)) == options_key(base)  # export choices: same transcript


def test_environment_is_parsed_by_field_type(tmp_path):
    env = {"SECURETRANSCRIBE_SPEAKER_NAMES": '{"SPEAKER_00": "Diane"}', "SECURETRANSCRIBE_CSV_BOM": "yes",
           "SECURETRANSCRIBE_DIARIZATION_PIPELINE": str(tmp_path), "SECURETRANSCRIBE_PORT": "9090"}
    s = Settings.from_env(environ=env)
    assert s.speaker_names == {"SPEAKER_00": "Diane"} and s.csv_bom is True and s.port == 9090
    assert s.diarization_pipeline == tmp_path.resolve() and isinstance(s.diarization_pipeline, Path)
    assert Settings.from_env(environ=s.as_env()) == s
    with pytest.raises(ValueError, match="SECURETRANSCRIBE_NUM_SPEAKERS"):
        Settings.from_env(environ={"SECURETRANSCRIBE_NUM_SPEAKERS": "0"})
    assert set(ALL_FORMATS) == set(KNOBS["formats"].choices)


def test_settings_do_not_touch_the_environment():
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "PYANNOTE_METRICS_ENABLED")}
    code = "import os, tasks, tasks.settings, tasks.options; print(sorted(os.environ.keys() & {'HF_HUB_OFFLINE'}))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_readme_settings_table_is_the_generated_one():
    from tasks.options import settings_table
    from tests.conftest import ROOT

    assert settings_table() in (ROOT / "README.md").read_text(encoding="utf-8"), \
        "README's settings table is stale: paste `securetranscribe settings --markdown`"
