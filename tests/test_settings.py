from pathlib import Path

import pytest

from tasks.settings import ALL_FORMATS, PROJECT_ROOT, Settings


def test_defaults_work_offline_with_packaged_models():
    s = Settings.from_env(environ={})
    assert s.model == "base"
    assert s.home == (PROJECT_ROOT / "data").resolve()
    assert s.inbox == s.home / "inbox" and s.outbox == s.home / "outbox"
    assert s.formats == ALL_FORMATS  # every export format by default; SECURETRANSCRIBE_FORMATS narrows


def test_env_values_are_parsed_by_type(tmp_path):
    env = {
        "SECURETRANSCRIBE_HOME": str(tmp_path),
        "SECURETRANSCRIBE_MODEL": "tiny.en",
        "SECURETRANSCRIBE_BATCH_SIZE": "8",
        "SECURETRANSCRIBE_CHUNK_TARGET_S": "200",
        "SECURETRANSCRIBE_DIARIZE": "no",
        "SECURETRANSCRIBE_NUM_SPEAKERS": "3",
        "SECURETRANSCRIBE_FORMATS": "json, srt,vtt",
        "SECURETRANSCRIBE_FAULT_OOM_ABOVE_S": "20.5",
    }
    s = Settings.from_env(environ=env)
    assert s.home == tmp_path.resolve()
    assert (s.model, s.batch_size, s.chunk_target_s, s.diarize) == ("tiny.en", 8, 200.0, False)
    assert s.num_speakers == 3 and s.fault_oom_above_s == 20.5
    assert s.formats == ("json", "srt", "vtt")


def test_overrides_beat_environment():
    s = Settings.from_env(environ={"SECURETRANSCRIBE_MODEL": "base"}, model="tiny.en", language=None)
    assert s.model == "tiny.en"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SECURETRANSCRIBE_BATCH_SIZE", "many", "SECURETRANSCRIBE_BATCH_SIZE"),
        ("SECURETRANSCRIBE_DIARIZE", "maybe", "SECURETRANSCRIBE_DIARIZE"),
        ("SECURETRANSCRIBE_FORMATS", "txt,exe", "unknown format"),
        ("SECURETRANSCRIBE_CHUNK_MIN_S", "500", "CHUNK_MIN_S"),
    ],
)
def test_bad_values_name_the_variable(name, value, message):
    with pytest.raises(ValueError, match=message):
        Settings.from_env(environ={name: value})


def test_as_env_round_trips():
    s = Settings.from_env(environ={}, model="tiny.en", num_speakers=2, formats=("json",))
    again = Settings.from_env(environ=s.as_env())
    assert again == s


def test_privacy_environment_is_forced_before_the_model_libraries_load():
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "PYANNOTE_METRICS_ENABLED")}
    code = ("import os, tasks.diarization, tasks.transcription, tasks.chunking; "
            "print(os.environ['HF_HUB_OFFLINE'], os.environ['PYANNOTE_METRICS_ENABLED'])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "0"]


def test_relative_home_is_anchored_at_the_project_root():
    s = Settings.from_env(environ={"SECURETRANSCRIBE_HOME": "somewhere"})
    assert s.home == (PROJECT_ROOT / "somewhere").resolve()
    assert isinstance(s.models_dir, Path)
