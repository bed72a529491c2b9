"""The `securetranscribe` console script, as users and scripts call it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.result import Transcript
from tests.conftest import ROOT, corpus_file

CLI = [str(ROOT / ".venv" / "bin" / "securetranscribe")] if (ROOT / ".venv/bin/securetranscribe").exists() \
    else [sys.executable, "-m", "tasks.cli"]


def run(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SECURETRANSCRIBE_HOME": str(home), "SECURETRANSCRIBE_MODEL": "tiny.en"}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=600)


def test_transcribe_writes_json_and_txt(tmp_path, pyannote_sample):
    proc = run("transcribe", str(pyannote_sample), "--out", str(tmp_path / "out"), home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    json_path, txt_path = tmp_path / "out" / "sample.json", tmp_path / "out" / "sample.txt"
    assert json_path.is_file() and txt_path.is_file()

    data = json.loads(json_path.read_text(encoding="utf-8"))
    for key in ("language", "duration", "speakers", "segments", "model", "device", "timings"):
        assert key in data
    assert data["language"] == "en" and data["model"] == "tiny.en"
    assert len(data["speakers"]) == 2
    words = [w for s in data["segments"] for w in s["words"]]
    assert words and all(set(w) >= {"start", "end", "text", "speaker", "probability"} for w in words)
    assert all(w["speaker"] in data["speakers"] for w in words)
    assert all(0 <= w["start"] <= w["end"] <= data["duration"] for w in words)
    assert [w["start"] for w in words] == sorted(w["start"] for w in words)
    assert set(data["timings"]) >= {"claim", "probe", "plan", "transcribe", "diarize", "merge"}

    # lossless round trip through the dataclasses
    assert Transcript.from_dict(data).to_dict() == data
    text = txt_path.read_text(encoding="utf-8")
    assert text.startswith("[00:00:0") and "SPEAKER_00:" in text and "SPEAKER_01:" in text
    assert oct(json_path.stat().st_mode & 0o777) == "0o640"


def test_speaker_names_and_formats_options(tmp_path, pyannote_sample):
    proc = run("transcribe", str(pyannote_sample), "--out", str(tmp_path), "--formats", "txt",
               "--speaker-name", "SPEAKER_00=Diane", "--num-speakers", "2", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "sample.json").exists()
    assert "Diane:" in (tmp_path / "sample.txt").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("zero.wav", b"", "empty"),
        ("notes.wav", b"not audio at all\n" * 100, "not an audio file"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, name, content, message):
    bad = tmp_path / name
    bad.write_bytes(content)
    proc = run("transcribe", str(bad), "--out", str(tmp_path / "out"), home=tmp_path)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr


def test_truncated_flac_exits_2(tmp_path):
    data = corpus_file("ami/dev00.flac").read_bytes()
    bad = tmp_path / "cut.flac"
    bad.write_bytes(data[: len(data) // 2])
    proc = run("transcribe", str(bad), "--out", str(tmp_path), home=tmp_path)
    assert proc.returncode == 2 and "cut.flac" in proc.stderr


def test_silence_gives_empty_transcript_and_exit_0(tmp_path):
    proc = run("transcribe", str(corpus_file("speech/empty.wav")), "--out", str(tmp_path), home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "empty.json").read_text(encoding="utf-8"))
    assert data["segments"] == [] and data["speakers"] == []


def test_models_verify_reports_present_models(tmp_path):
    proc = run("models", "verify", home=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok" in proc.stdout and "whisper-base" in proc.stdout


def test_usage_error_exits_2(tmp_path):
    proc = run("transcribe", home=tmp_path)
    assert proc.returncode == 2


def test_a_250_character_name_gets_every_export_format(tmp_path):
    """The longest names a file system allows: outputs (and their temporary files) still fit in 255 bytes."""
    from tasks.settings import ALL_FORMATS
    from tests.conftest import ffmpeg

    name = "interview " + "x" * 236 + ".flac"  # 250 characters
    ffmpeg("-i", str(corpus_file("speech/jfk.flac")), str(tmp_path / name))
    proc = run("transcribe", str(tmp_path / name), "--out", str(tmp_path / "out"), "--no-diarize", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert {n.rsplit(".", 1)[1] for n in written} == set(ALL_FORMATS), written
    assert all(len(n.encode()) <= 255 and not n.startswith(".") for n in written), written
    assert "country" in (tmp_path / "out" / written[0]).with_suffix(".txt").read_text(encoding="utf-8")


def test_transcribe_and_diarize_side_by_side_give_the_same_transcript(tiny_settings, pyannote_sample, monkeypatch):
    """The CLI's transcribe ∥ diarize (threads, CPU) == one after the other, same threads per stage."""
    import dataclasses
    import threading

    from tasks import devices, pipeline
    from tasks.stages import STAGES

    seen: dict[str, str] = {}

    def traced(stage):  # record the thread each heavy stage runs in
        def run(*args, **kwargs):
            seen[stage.name] = threading.current_thread().name
            return stage.run(*args, **kwargs)
        return dataclasses.replace(stage, run=run) if stage.gpu else stage

    monkeypatch.setattr(pipeline, "STAGES", tuple(traced(s) for s in STAGES))
    monkeypatch.setattr(devices, "usable_cores", lambda: 2)
    heavy = {s.name for s in STAGES if s.gpu}
    settings = tiny_settings.replace(cpu_threads=1)

    together = pipeline.transcribe_file(pyannote_sample, settings.replace(side_by_side=True))
    assert set(seen) == heavy and all(seen[n].startswith("stage") for n in heavy), seen  # worker threads
    seen.clear()
    apart = pipeline.transcribe_file(pyannote_sample, settings.replace(side_by_side=False))
    assert set(seen) == heavy and all(seen[n] == threading.current_thread().name for n in heavy), seen

    assert len(together.speakers) == 2 and together.text.strip()
    assert [(w.text, w.start, w.end, w.speaker) for w in together.words] == \
        [(w.text, w.start, w.end, w.speaker) for w in apart.words]
