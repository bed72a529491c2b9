"""Hostile inputs dropped into the real inbox (real scheduler): each ends in a clear, recorded outcome.

Never a silent drop, never a crash loop, and the original always ends in archive/ or quarantine/.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from tests.airflow_harness import running_airflow
from tests.conftest import corpus_file, ffmpeg

pytestmark = [pytest.mark.airflow, pytest.mark.slow, pytest.mark.timeout(2400)]
PROCESS = "securetranscribe_process"
LONG_NAME = "interview " + "x" * 236 + ".flac"  # 250 characters


def make_inputs(folder: Path) -> dict[str, Path]:
    """The hostile set, built from corpus files; name -> path (not yet in the inbox)."""
    jfk, ami = corpus_file("speech/jfk.flac"), corpus_file("ami/trn03.flac")
    out: dict[str, Path] = {}

    def copy(src: Path, name: str) -> None:
        shutil.copyfile(src, folder / name)
        out[name] = folder / name

    (folder / "zero.wav").write_bytes(b"")
    out["zero.wav"] = folder / "zero.wav"
    data = ami.read_bytes()
    (folder / "cut.flac").write_bytes(data[: len(data) // 3])
    out["cut.flac"] = folder / "cut.flac"
    mp3 = corpus_file("speech/multilingual.mp3").read_bytes()
    (folder / "cut.mp3").write_bytes(mp3[: len(mp3) // 2])
    out["cut.mp3"] = folder / "cut.mp3"
    (folder / "report.wav").write_bytes(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<</Type/Catalog>>endobj\n" * 40)
    out["report.wav"] = folder / "report.wav"
    ffmpeg("-f", "lavfi", "-i", "testsrc=duration=11:size=64x64:rate=5", "-i", str(jfk), "-shortest",
           "-c:v", "libx264", "-c:a", "aac", str(folder / "talk.mp4"))
    out["talk.mp4"] = folder / "talk.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=duration=3:size=64x64:rate=5", "-c:v", "libx264", str(folder / "mute.mp4"))
    out["mute.mp4"] = folder / "mute.mp4"
    ffmpeg("-i", str(jfk), "-ac", "8", "-ar", "96000", str(folder / "eight channels.wav"))
    out["eight channels.wav"] = folder / "eight channels.wav"
    ffmpeg("-i", str(jfk), "-t", "0.3", str(folder / "blip.wav"))
    out["blip.wav"] = folder / "blip.wav"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "600", str(folder / "silence.flac"))
    out["silence.flac"] = folder / "silence.flac"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "720", str(folder / "too long.flac"))
    out["too long.flac"] = folder / "too long.flac"
    for i, name in enumerate(("meeting with spaces.flac", "trñ00 ünïcode.flac", "it's \"quoted\".flac", "a..b.flac",
                              "-rf --leading-dash.flac", LONG_NAME)):
        ffmpeg("-i", str(jfk), "-af", f"apad=pad_dur={0.1 * (i + 1):.1f}", str(folder / "tmp.flac"))
        (folder / "tmp.flac").rename(folder / name)  # distinct content each, so none is a duplicate
        out[name] = folder / name
    copy(jfk, "copy one.flac")
    copy(jfk, "copy two.flac")  # the same content under two names, dropped together
    return out


@pytest.fixture(scope="module")
def af(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    with running_airflow(tmp, SECURETRANSCRIBE_MODEL="tiny.en", SECURETRANSCRIBE_DIARIZE="0",
                         SECURETRANSCRIBE_INBOX_STABLE_S="3", SECURETRANSCRIBE_MAX_DURATION_S="660") as airflow:
        try:
            yield airflow
        except Exception:
            print(airflow.tail())
            raise


@pytest.fixture(scope="module")
def outcome(af, tmp_path_factory):
    """Drop everything at once (plus a symlink and a slowly written file); wait for every run."""
    staging = tmp_path_factory.mktemp("staging")
    inputs = make_inputs(staging)
    inbox = af.settings_home / "inbox"
    outside = tmp_path_factory.mktemp("outside") / "secret.txt"
    outside.write_text("not yours")
    os.symlink(outside, inbox / "link.wav")
    for name, path in inputs.items():
        shutil.move(path, inbox / name)

    full = corpus_file("ami/trn05.flac").read_bytes()
    stop = threading.Event()

    def slow_writer() -> None:  # a file still being written: 1/16 of it every 0.6 s (well under 3 s apart)
        with open(inbox / "slow upload.flac", "wb") as fh:
            step = len(full) // 16 + 1
            for i in range(0, len(full), step):
                fh.write(full[i: i + step])
                fh.flush()
                if stop.wait(0.6):
                    return

    writer = threading.Thread(target=slow_writer)
    writer.start()
    expected = len(inputs) + 2  # + the symlink + the slow upload
    try:
        runs = af.wait_for_runs(PROCESS, count=expected, timeout=1800)
    finally:
        stop.set()
        writer.join()
    return {"runs": runs, "inputs": inputs, "outside": outside, "slow_sha": hashlib.sha256(full).hexdigest()}


def final(af, run: dict) -> dict:
    return json.loads((af.settings_home / "work" / run["dag_run_id"] / "final.json").read_text())


def run_for(outcome: dict, af, name: str) -> dict:
    """The run whose claimed input had this name."""
    for run in outcome["runs"]:
        claim = af.settings_home / "work" / run["dag_run_id"] / "claim.json"
        if claim.is_file() and Path(json.loads(claim.read_text())["source"]).name == name:
            return run
    raise AssertionError(f"no run for {name!r}")


def outputs(out: Path, suffix: str) -> Path:
    """The output with this suffix (pathlib's glob also matches the hidden .source.json)."""
    found = [p for p in out.glob(f"*{suffix}") if not p.name.startswith(".")]
    assert len(found) == 1, (out, suffix, found)
    return found[0]


def reason(af, run: dict) -> dict:
    return json.loads((af.settings_home / "quarantine" / run["dag_run_id"] / "reason.json").read_text())


def test_every_drop_got_exactly_one_run_and_the_inbox_is_empty(af, outcome):
    ids = [r["dag_run_id"] for r in outcome["runs"]]
    assert len(ids) == len(set(ids)) == len(outcome["inputs"]) + 2
    assert all(r["state"] in ("success", "failed") for r in outcome["runs"])
    assert list((af.settings_home / "inbox").iterdir()) == []


@pytest.mark.parametrize(("name", "error", "words"), [
    ("zero.wav", "EmptyAudio", "0 bytes"),
    ("cut.flac", "InvalidAudio", "cut.flac"),
    ("cut.mp3", "InvalidAudio", "cut.mp3"),
    ("report.wav", "InvalidAudio", "not an audio file"),
    ("mute.mp4", "InvalidAudio", "no audio track"),
    ("too long.flac", "AudioTooLong", "over the limit"),
    ("link.wav", "UnsafeInput", "symbolic link"),
])
def test_rejects_are_quarantined_with_a_reason(af, outcome, name, error, words):
    run = run_for(outcome, af, name)
    assert run["state"] == "failed"
    why = reason(af, run)
    assert why["error_type"] == error and words in why["message"], why
    assert (af.settings_home / "quarantine" / run["dag_run_id"] / name).exists() or \
        (af.settings_home / "quarantine" / run["dag_run_id"] / name).is_symlink()
    tries = {t["task_id"]: t["try_number"] for t in af.task_instances(PROCESS, run["dag_run_id"])}
    assert max(tries.get("claim", 1), tries.get("probe", 1)) == 1  # failed once: no crash loop


def test_symlink_target_is_never_touched(af, outcome):
    assert outcome["outside"].read_text() == "not yours"
    link = af.settings_home / "quarantine" / run_for(outcome, af, "link.wav")["dag_run_id"] / "link.wav"
    assert link.is_symlink() and Path(os.readlink(link)) == outcome["outside"]


@pytest.mark.parametrize("name", ["talk.mp4", "eight channels.wav", "meeting with spaces.flac", "trñ00 ünïcode.flac",
                                  "it's \"quoted\".flac", "a..b.flac", "-rf --leading-dash.flac", LONG_NAME])
def test_awkward_but_valid_inputs_are_transcribed_and_archived(af, outcome, name):
    run = run_for(outcome, af, name)
    assert run["state"] == "success", name
    done = final(af, run)
    assert done["outcome"] in ("archived", "duplicate")
    assert Path(done["archived"]).is_file() and Path(done["archived"]).name.startswith(Path(name).stem[:50])
    if done["outcome"] == "archived":
        out = Path(done["out_dir"])
        data = json.loads(outputs(out, ".json").read_text())
        assert "country" in " ".join(s["text"] for s in data["segments"]).lower()
        assert all(len(p.name.encode()) <= 255 for p in out.iterdir())


def test_long_silence_gives_an_empty_transcript_not_hallucinations(af, outcome):
    run = run_for(outcome, af, "silence.flac")
    assert run["state"] == "success"
    out = Path(final(af, run)["out_dir"])
    data = json.loads(outputs(out, ".json").read_text())
    assert data["segments"] == [] and data["duration"] == pytest.approx(600, abs=1)
    assert "no speech" in outputs(out, ".txt").read_text()


def test_a_third_of_a_second_is_processed(af, outcome):
    run = run_for(outcome, af, "blip.wav")
    assert run["state"] == "success"
    data = json.loads(outputs(Path(final(af, run)["out_dir"]), ".json").read_text())
    assert data["duration"] == pytest.approx(0.3, abs=0.05) and len(data["segments"]) <= 1


def test_same_content_twice_has_clear_outcomes(af, outcome):
    runs = [run_for(outcome, af, n) for n in ("copy one.flac", "copy two.flac")]
    outcomes = sorted(final(af, r)["outcome"] for r in runs)
    assert all(r["state"] == "success" for r in runs)
    # dropped together both may be processed (identical outputs) or the later one recorded as a duplicate
    assert outcomes in (["archived", "archived"], ["archived", "duplicate"])
    assert {Path(final(af, r)["archived"]).name for r in runs} == {"copy one.flac", "copy two.flac"}


def test_a_slowly_written_file_is_taken_only_when_complete(af, outcome):
    run = run_for(outcome, af, "slow upload.flac")
    assert run["state"] == "success"
    info = json.loads((af.settings_home / "work" / run["dag_run_id"] / "run.json").read_text())
    assert info["sha256"] == outcome["slow_sha"]


def test_data_files_and_folders_are_private(af, outcome):
    home = af.settings_home
    for top in ("outbox", "archive", "quarantine", "work"):
        for path in [home / top, *(home / top).rglob("*")]:
            if path.is_symlink():
                continue
            mode = path.stat().st_mode & 0o777
            assert mode & 0o007 == 0, f"{path} is readable by others ({oct(mode)})"
            if path.is_dir():
                assert mode == 0o750, path
    assert (home / "metrics.db").stat().st_mode & 0o007 == 0


def test_logs_never_contain_transcript_text(af, outcome):
    logs = list((af.home / "logs").rglob("*.log")) + list((af.home / "logs").rglob("*.json"))
    assert logs
    for path in logs:
        text = path.read_text(errors="replace").lower()
        for phrase in ("fellow americans", "ask not what your country"):
            assert phrase not in text, f"transcript text in {path}"


def test_admin_password_is_generated(af):
    password = af.password()
    assert password != "admin" and len(password) >= 12
