"""Shared fixtures: the real corpus, real models, generated edge-case media."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("SECURETRANSCRIBE_CORPUS", ROOT.parent / "shared" / "corpus")).resolve()
ARTIFACTS = ROOT / "artifacts"


def pytest_configure(config: pytest.Config) -> None:
    """One throw-away AIRFLOW_HOME for every in-process Airflow import of this test session."""
    import tempfile

    if "PYTEST_AIRFLOW_HOME" not in os.environ:
        home = tempfile.mkdtemp(prefix="st-airflow-home-")
        os.environ.update({
            "PYTEST_AIRFLOW_HOME": home,
            "AIRFLOW_HOME": home,
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        })


def corpus_file(relative: str) -> Path:
    path = CORPUS / relative
    if not path.is_file():
        pytest.fail(f"test corpus file missing: {path} (set SECURETRANSCRIBE_CORPUS)", pytrace=False)
    return path


@pytest.fixture(scope="session")
def corpus() -> Path:
    if not (CORPUS / "MANIFEST.tsv").is_file():
        pytest.fail(f"test corpus not found at {CORPUS} (set SECURETRANSCRIBE_CORPUS)", pytrace=False)
    return CORPUS


@pytest.fixture(scope="session")
def jfk(corpus: Path) -> Path:
    return corpus_file("speech/jfk.flac")


@pytest.fixture(scope="session")
def pyannote_sample() -> Path:
    import pyannote.audio

    path = Path(pyannote.audio.__file__).parent / "sample" / "sample.wav"
    assert path.is_file(), "pyannote.audio wheel should ship sample/sample.wav"
    return path


@pytest.fixture(scope="session")
def ami_files(corpus: Path) -> list[Path]:
    files = sorted((corpus / "ami").glob("*.flac"))
    assert len(files) == 8, f"expected the 8 AMI excerpts in {corpus / 'ami'}"
    return files


@pytest.fixture(scope="session")
def tiny_settings(tmp_path_factory):
    """Settings with the fast packaged model and a throw-away data home."""
    from tasks.settings import Settings

    return Settings.from_env(model="tiny.en", home=tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="session")
def long_meeting(tmp_path_factory, corpus: Path) -> Path:
    """A 10-minute meeting with reference RTTM, built by the corpus's make_long.py."""
    out = tmp_path_factory.mktemp("long")
    subprocess.run([sys.executable, str(corpus / "make_long.py"), str(out), "--minutes", "10"],
                   check=True, capture_output=True)
    return out / "long_meeting.wav"


def write_wav(audio, path: Path) -> Path:
    """Write a 16 kHz mono float waveform as 16-bit PCM WAV (parent folders created)."""
    import wave

    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm.tobytes())
    return path


def ami_meeting(path: Path, minutes: float) -> Path:
    """The corpus's AMI excerpts end to end, in name order and again, until ``minutes`` are reached."""
    import numpy as np

    from tasks.audio import decode

    excerpts = sorted(corpus_file("ami/dev00.flac").parent.glob("*.flac"))
    pieces, total = [], 0.0
    while total < minutes * 60:
        for f in excerpts:
            pieces.append(decode(f))
            total += len(pieces[-1]) / 16000
            if total >= minutes * 60:
                break
    return write_wav(np.concatenate(pieces), path)


def ffmpeg(*args: str) -> None:
    if shutil.which("ffmpeg") is None:
        pytest.fail("ffmpeg is needed to build test media (Debian package ffmpeg)", pytrace=False)
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """Migrate the session's SQLite Airflow DB (pyproject's pytest ``pythonpath`` puts ``dags/`` on the path,
    as the dag bundle does, so the DAG files import ``securetranscribe_lib``)."""
    subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], check=True, capture_output=True)


@pytest.fixture(scope="session")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))
