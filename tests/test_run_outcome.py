"""What a finished run tells others: its note, its asset event (archived files only), its name.

The end-to-end test runs the real embedded Airflow with the example consumer DAG of `docs/examples/` as
a second DAG bundle: a file triggered by hand (no run id) gets a run named after it and a note with its
outcome, and its asset event triggers the consumer, which sees the extras; a bad file's run fails with
the quarantine reason as its note and emits nothing, and so does content already transcribed.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from urllib.parse import quote

import pytest

from tasks.inbox import manual_run_id
from tasks.outcome import one_line, run_note, transcript_event
from tasks.workspace import RunInfo, Workspace
from tests.airflow_harness import ROOT, TERMINAL, running_airflow, wait_until

PROCESS = "securetranscribe_process"
CONSUMER = "securetranscribe_on_transcript"
LOCAL_BUNDLE = "airflow.dag_processing.bundles.local.LocalDagBundle"
BUNDLES = json.dumps([
    {"name": "dags-folder", "classpath": LOCAL_BUNDLE, "kwargs": {}},
    {"name": "examples", "classpath": LOCAL_BUNDLE, "kwargs": {"path": str(ROOT / "docs" / "examples")}},
])


def workspace(tmp_path: Path, **transcript: object) -> Workspace:
    ws = Workspace(tmp_path / "work" / "file__jfk__1").create()
    info = RunInfo(run_id="file__jfk__1", name="jfk.flac", stem="jfk", work=str(ws.root), input="", source="",
                   sha256="ab" * 32, size=1, out_dir=str(tmp_path / "outbox" / "jfk"), options_key="k",
                   options={"speaker_names": {"SPEAKER_00": "JFK"}})
    ws.run_file.write_text(json.dumps(info.to_dict()))
    if transcript:
        ws.transcript_file.write_text(json.dumps(transcript))
    ws.exports_dir.mkdir(parents=True, exist_ok=True)
    ws.export_record("txt").write_text(json.dumps({"format": "txt", "ok": True, "files": ["/o/jfk.txt"]}))
    ws.export_record("pdf").write_text(json.dumps({"format": "pdf", "ok": False, "error": "disk full"}))
    return ws


def test_notes_are_one_line_with_the_file_and_the_outcome(tmp_path):
    ws = workspace(tmp_path, language="en", duration=11.04, speakers=["SPEAKER_00"])
    assert run_note(ws, {"outcome": "archived", "formats": ["txt", "json"]}) == \
        "jfk.flac — transcribed: 11 s, en, 1 speaker, 2 formats"
    assert run_note(ws, {"outcome": "duplicate", "duplicate_of": {"run_id": "file__jfk__0"}}) == \
        "jfk.flac — already transcribed by run file__jfk__0: not again"
    reason = {"file": "jfk.flac", "stage": "probe", "error_type": "InputError", "message": "not audio:\nat all " * 80}
    note = run_note(ws, {"outcome": "quarantined", "reason": reason})
    assert note.startswith("jfk.flac — quarantined: probe failed: InputError: not audio: at all")
    assert "\n" not in note and len(note) <= 300
    assert one_line("a\nb") == "a b"


def test_only_archived_files_have_an_event_and_it_names_outputs_not_text(tmp_path):
    ws = workspace(tmp_path, language="en", duration=11.0, speakers=["SPEAKER_00"], text="secret words")
    extra = transcript_event(ws, {"outcome": "archived", "archived": "/a/jfk.flac"})
    assert extra == {"run_id": "file__jfk__1", "file": "jfk.flac", "stem": "jfk", "sha256": "ab" * 32,
                     "out_dir": str(tmp_path / "outbox" / "jfk"), "outputs": {"txt": ["/o/jfk.txt"]},
                     "archived": "/a/jfk.flac", "language": "en", "duration": 11.0, "speakers": ["SPEAKER_00"],
                     "speaker_names": {"SPEAKER_00": "JFK"}}
    for outcome in ("duplicate", "partial", "quarantined", "not_claimed"):
        assert transcript_event(ws, {"outcome": outcome}) is None


def test_runs_started_by_hand_are_named_after_their_file():
    assert manual_run_id("/x/Trñ meeting.v2.flac", now=0).startswith("file__Trn_meeting_v2__manual_19700101T000000_")
    path = ROOT / "plugins" / "securetranscribe_runs.py"
    spec = importlib.util.spec_from_file_location("securetranscribe_runs", path)
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    renamed = json.loads(plugin._renamed(b'{"conf": {"path": "/in/jfk.flac"}, "dag_run_id": null}'))
    assert renamed["dag_run_id"].startswith("file__jfk__manual_") and renamed["conf"] == {"path": "/in/jfk.flac"}
    kept = b'{"conf": {"path": "/in/jfk.flac"}, "dag_run_id": "mine"}'
    assert plugin._renamed(kept) == kept
    assert plugin._renamed(b'{"conf": {}}') == b'{"conf": {}}'
    assert plugin.TRIGGER_PATH.search("/api/v2/dags/securetranscribe_process_batch/dagRuns")
    assert not plugin.TRIGGER_PATH.search("/api/v2/dags/securetranscribe_inbox/dagRuns")


@pytest.mark.slow
def test_asset_event_reaches_the_example_consumer_and_runs_tell_their_outcome(tmp_path, jfk):
    with running_airflow(tmp_path, SECURETRANSCRIBE_MODEL="tiny.en", SECURETRANSCRIBE_DIARIZE="0",
                         SECURETRANSCRIBE_FORMATS="txt,json",
                         AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST=BUNDLES) as af:
        def dag_exists(dag_id: str) -> bool:
            return any(d["dag_id"] == dag_id for d in af.api("GET", "/dags?limit=100")["dags"])

        def finished(run_id: str) -> dict:
            def done() -> dict | None:
                run = af.api("GET", f"/dags/{PROCESS}/dagRuns/{quote(run_id, safe='')}")
                return run if run["state"] in TERMINAL else None
            return wait_until(done, 600, 2.0, f"run {run_id} to finish")

        wait_until(lambda: dag_exists(CONSUMER), 180, 2.0, "the example consumer DAG to be parsed")
        source = tmp_path / "talks" / "jfk.flac"
        source.parent.mkdir()
        shutil.copyfile(jfk, source)

        # started by hand without a run id: named after the file; the note tells the outcome
        run_id = af.trigger(PROCESS, {"path": str(source)})["dag_run_id"]
        assert run_id.startswith("file__jfk__manual_")
        run = finished(run_id)
        assert run["state"] == "success", af.tail()
        assert run["note"].startswith("jfk.flac — transcribed: 11 s, en, "), run["note"]

        # the asset event triggers the consumer, which sees the extras
        [consumer] = af.wait_for_runs(CONSUMER, 1, timeout=300)
        assert consumer["state"] == "success", af.tail()
        xcom = af.api("GET", f"/dags/{CONSUMER}/dagRuns/{quote(consumer['dag_run_id'], safe='')}"
                             "/taskInstances/summarise/xcomEntries/return_value")
        value = json.loads(xcom["value"]) if isinstance(xcom["value"], str) else xcom["value"]
        [extra] = value
        assert (extra["run_id"], extra["file"], extra["language"]) == (run_id, "jfk.flac", "en")
        assert abs(extra["duration"] - 11.0) < 0.5 and isinstance(extra["speakers"], list)
        assert sorted(extra["outputs"]) == ["json", "txt"]
        assert "country" in Path(extra["outputs"]["txt"][0]).read_text(encoding="utf-8").lower()

        # the transcribe task's log says how far it got
        log = af.api("GET", f"/dags/{PROCESS}/dagRuns/{quote(run_id, safe='')}/taskInstances/transcribe/logs/1"
                            "?full_content=true")
        assert "transcribe: 1/1 chunks · 11/11 s" in json.dumps(log, ensure_ascii=False)

        # a bad file: the run fails, its note is the quarantine reason in one line, no event
        bad = tmp_path / "talks" / "notes.flac"
        bad.write_text("these are not audio\n" * 10)
        bad_id = af.trigger(PROCESS, {"path": str(bad)})["dag_run_id"]
        assert bad_id.startswith("file__notes__manual_")
        run = finished(bad_id)
        assert run["state"] == "failed"
        assert run["note"].startswith("notes.flac — quarantined: probe failed: "), run["note"]
        assert "\n" not in run["note"]

        # the same content again: done already, the run succeeds, no second event
        again_id = af.trigger(PROCESS, {"path": str(source)})["dag_run_id"]
        run = finished(again_id)
        assert run["state"] == "success" and "already transcribed" in run["note"], run["note"]
        events = af.api("GET", "/assets/events?limit=100")["asset_events"]
        assert [e["source_run_id"] for e in events] == [run_id]
        assert len(af.runs(CONSUMER)) == 1
