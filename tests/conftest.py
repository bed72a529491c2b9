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
    """Migrate the session's SQLite Airflow DB; put the DAGs folder on sys.path as the dag bundle does."""
    subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], check=True, capture_output=True)
    if str(ROOT / "dags") not in sys.path:
        sys.path.insert(0, str(ROOT / "dags"))


@pytest.fixture(scope="session")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))
