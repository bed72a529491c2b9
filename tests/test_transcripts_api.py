"""The Transcripts view's API and pages (FastAPI TestClient): login, traversal, Range, search, renames, escaping.

Runs are real run folders written by the pipeline's own export and metrics stages (no models needed):
a transcript JSON, export records, ``final.json`` with the archived original, and the metrics database's
rows and search index.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fastapi import Depends, HTTPException, Request
from fastapi.testclient import TestClient

from tasks.files import atomic_write_json
from tasks.recording import StageHooks
from tasks.settings import Settings
from tasks.stages import export_stage, metrics_stage
from tasks.transcripts.index import TranscriptIndex, query_words
from tasks.transcripts.speakers import apply_rename, read_record
from tasks.transcripts.web import AirflowLink, create_app
from tasks.workspace import RunInfo, Workspace
from tests.conftest import write_wav
from tests.servers import postgres_or_skip

SCRIPT = "<script>alert(1)</script>"
FORMATS = ("txt", "json", "srt", "csv", "md", "docx", "pdf")


def _segments(words: list[str], speakers: list[str]) -> list[dict]:
    out = []
    for i, (text, speaker) in enumerate(zip(words, speakers)):
        start = 2.0 * i
        toks = text.split()
        step = 1.8 / len(toks)
        out.append({"start": start, "end": start + 1.8, "text": text, "speaker": speaker,
                    "words": [{"start": round(start + j * step, 3), "end": round(start + (j + 1) * step, 3),
                               "text": " " + w, "probability": 0.9, "speaker": speaker} for j, w in enumerate(toks)]})
    return out


def make_run(settings: Settings, run_id: str, name: str, lines: list[str], speakers: list[str],
             *, archived: bool = True, formats: tuple[str, ...] = ("txt", "json", "srt")) -> Workspace:
    """A finished run folder as the DAG leaves it (exports written, metrics row and index from the stages)."""
    ws = Workspace.for_run(settings.work, run_id).create()
    stem = Path(name).stem
    sha = f"{abs(hash(run_id)):064x}"[:64]
    original = settings.archive / "2026" / "11" / "30" / name
    write_wav(0.1 * np.sin(np.linspace(0, 2000, 16000 * 2 * len(lines))).astype("float32"), original)
    info = RunInfo(run_id=run_id, name=name, stem=stem, work=str(ws.root), input=str(ws.input_dir / name),
                   source=str(settings.inbox / name), sha256=sha, size=original.stat().st_size,
                   out_dir=str(settings.outbox / stem), options_key="k", options={"formats": list(formats)})
    atomic_write_json(ws.run_file, info.to_dict())
    labels = list(dict.fromkeys(speakers))
    transcript = {"language": "en", "duration": 2.0 * len(lines), "segments": _segments(lines, speakers),
                  "speakers": labels, "model": "tiny.en", "device": "cpu", "source": {"file": name, "sha256": sha}}
    atomic_write_json(ws.transcript_file, transcript)
    atomic_write_json(ws.info_file, {"duration": 2.0 * len(lines)})
    hooks = StageHooks.for_settings(settings)
    for fmt in formats:
        export_stage(ws, fmt, settings, hooks=hooks)
    metrics_stage(ws, settings, hooks=hooks)
    final = {"outcome": "archived", "archived": str(original), "out_dir": info.out_dir, "formats": list(formats)}
    if not archived:
        final = {"outcome": "quarantined", "folder": str(settings.quarantine / run_id), "reason": {}}
    atomic_write_json(ws.final_file, final)
    hooks.file(ws, "success" if archived else "quarantined")
    return ws


class FakeAirflow:
    def __init__(self) -> None:
        self.triggered: list[tuple[str, str | None, str]] = []
        self.states: dict[str, str] = {}

    def link(self) -> AirflowLink:
        def trigger(run_id: str, user: str | None, note: str) -> str:
            self.triggered.append((run_id, user, note))
            dag_run = f"rename__{len(self.triggered)}"
            self.states[dag_run] = "queued"
            return dag_run

        return AirflowLink(trigger_rename=trigger, run_state=self.states.get,
                           run_dags=lambda ids: {i: "securetranscribe_process" for i in ids})


def login(request: Request) -> None:
    """Stands in for Airflow's check: a bearer token, else 401; the user name for the edit history."""
    if request.headers.get("authorization") != "Bearer good":
        raise HTTPException(status_code=401, detail="Not authenticated")
    request.state.airflow_user = "diane.admin"


AUTH = {"Authorization": "Bearer good"}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    home = tmp_path_factory.mktemp("st-home")
    settings = Settings.from_env(home=home, metrics_url=f"sqlite:///{home / 'metrics.db'}")
    for folder in (settings.inbox, settings.outbox, settings.archive, settings.quarantine, settings.work):
        folder.mkdir(parents=True, exist_ok=True)
    meeting = make_run(settings, "file__budget__1", "budget.wav",
                       ["Welcome to the budget meeting.", "The aquarium needs a new pump.",
                        "We approve the spending today.", "Thanks everyone."],
                       ["SPEAKER_00", "SPEAKER_01", "SPEAKER_00", "SPEAKER_02"], formats=FORMATS)
    make_run(settings, "file__garden__2", "garden.wav", ["The roses bloom in June.", "Water them daily."],
             ["SPEAKER_00", "SPEAKER_01"])
    make_run(settings, "file__bad__3", "bad.wav", ["Nothing archived here, aquarium."], ["SPEAKER_00"], archived=False)
    fake = FakeAirflow()
    client = TestClient(create_app(lambda: settings, dependencies=[Depends(login)], airflow=fake.link()))
    return {"settings": settings, "client": client, "fake": fake, "meeting": meeting}


def test_every_route_needs_a_login(env):
    c = env["client"]
    routes = [("GET", "/"), ("GET", "/?q=pump"), ("GET", "/transcripts/file__budget__1"),
              ("GET", "/transcripts/file__budget__1/exports/budget.txt"), ("GET", "/api/transcripts"),
              ("GET", "/api/transcripts/file__budget__1"), ("GET", "/api/transcripts/file__budget__1/audio"),
              ("PUT", "/api/transcripts/file__budget__1/speakers")]
    for method, path in routes:
        assert c.request(method, path, json={"SPEAKER_00": "x"}).status_code == 401, path
    assert c.get("/api/transcripts/file__budget__1", headers=AUTH).status_code == 200
    assert read_record(env["meeting"])["edits"] == []  # the refused PUT saved nothing


@pytest.mark.parametrize("path", [
    "/api/transcripts/../metrics.db", "/api/transcripts/..%2fmetrics.db", "/api/transcripts/%2e%2e",
    "/api/transcripts/..", "/api/transcripts/%2Fetc%2Fpasswd", "/api/transcripts/%2Fetc%2Fpasswd/audio",
    "/api/transcripts/..%2F..%2Fetc%2Fpasswd/audio", "/api/transcripts/.hidden", "/api/transcripts/linked",
    "/api/transcripts/linked/audio", "/transcripts/linked", "/api/transcripts/file__bad__3/audio",
    "/api/transcripts/file__stray__9/audio", "/transcripts/file__budget__1/exports/..%2frun.json",
    "/transcripts/file__budget__1/exports/%2Fetc%2Fpasswd", "/transcripts/file__budget__1/exports/.source.json",
    "/transcripts/file__budget__1/exports/secret.txt", "/transcripts/file__budget__1/exports/budget.json%00.txt",
    "/api/transcripts/nope",
])
def test_traversal_and_other_paths_are_not_found(env, path, tmp_path_factory):
    settings = env["settings"]
    outside = tmp_path_factory.mktemp("outside")
    (outside / "run.json").write_text("{}")
    link = settings.work / "linked"
    if not link.is_symlink():
        link.symlink_to(env["meeting"].root)  # a link to a real run folder is still refused
    secret = settings.outbox / "budget" / "secret.txt"
    if not secret.is_symlink():
        secret.symlink_to(settings.home / "metrics.db")
    stray = Workspace.for_run(settings.work, "file__stray__9").create()  # claims an "archived" file in the inbox
    (settings.inbox / "stray.wav").write_bytes(b"RIFF" + b"0" * 100)
    atomic_write_json(stray.final_file, {"outcome": "archived", "archived": str(settings.inbox / "stray.wav")})
    response = env["client"].get(path, headers=AUTH)
    assert response.status_code == 404, (path, response.status_code, response.text[:200])


def test_audio_is_the_archived_original_with_range_requests(env):
    c, settings = env["client"], env["settings"]
    original = settings.archive / "2026" / "11" / "30" / "budget.wav"
    whole = c.get("/api/transcripts/file__budget__1/audio", headers=AUTH)
    assert whole.status_code == 200 and whole.content == original.read_bytes()
    assert whole.headers["accept-ranges"] == "bytes" and whole.headers["content-type"] in ("audio/x-wav", "audio/wav")
    part = c.get("/api/transcripts/file__budget__1/audio", headers={**AUTH, "Range": "bytes=1000-1999"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 1000-1999/{original.stat().st_size}"
    assert part.content == original.read_bytes()[1000:2000]
    tail = c.get("/api/transcripts/file__budget__1/audio", headers={**AUTH, "Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == original.read_bytes()[-10:]


def test_search_lists_only_the_files_holding_every_word(env):
    c = env["client"]
    everything = c.get("/api/transcripts", headers=AUTH)
    assert everything.headers["x-total-count"] == "3"
    assert [t["run_id"] for t in everything.json()] == ["file__bad__3", "file__garden__2", "file__budget__1"]
    hits = c.get("/api/transcripts", params={"q": "aquarium pump"}, headers=AUTH).json()
    assert [(h["run_id"], h["file"], h["stem"]) for h in hits] == [("file__budget__1", "budget.wav", "budget")]
    assert hits[0]["duration"] == 8.0 and hits[0]["speakers"] == ["SPEAKER_00", "SPEAKER_01", "SPEAKER_02"]
    assert hits[0]["processed_at"]
    assert {h["run_id"] for h in c.get("/api/transcripts", params={"q": "AQUARIUM"}, headers=AUTH).json()} == {
        "file__budget__1", "file__bad__3"}
    assert c.get("/api/transcripts", params={"q": "roses"}, headers=AUTH).json()[0]["file"] == "garden.wav"
    assert c.get("/api/transcripts", params={"q": "submarine"}, headers=AUTH).json() == []
    for hostile in ('"', "pump AND", "pu*", "NEAR(", "') OR 1=1 --", "-pump", SCRIPT):  # never syntax
        assert c.get("/api/transcripts", params={"q": hostile}, headers=AUTH).status_code == 200, hostile
    page = c.get("/api/transcripts", params={"limit": 1, "offset": 1}, headers=AUTH)
    assert [t["run_id"] for t in page.json()] == ["file__garden__2"] and page.headers["x-total-count"] == "3"
    html = c.get("/", params={"q": "pump"}, headers=AUTH).text
    assert 'data-run-id="file__budget__1"' in html and "file__garden__2" not in html
    assert "<mark>pump</mark>" in html and "1 file whose transcript holds" in html
    assert "../dags/securetranscribe_process/runs/file__budget__1" in html
    assert query_words("a-b c") == ["a", "b", "c"]


def test_transcript_page_shows_segments_player_exports_and_timings(env):
    c = env["client"]
    html = c.get("/transcripts/file__budget__1", headers=AUTH).text
    assert html.count('class="seg"') == 4 and 'data-start="4.0"' in html
    assert '<audio id="player" controls preload="metadata" src="../api/transcripts/file__budget__1/audio">' in html
    for name in ("budget.txt", "budget.pdf", "budget.docx", "budget.srt"):
        assert f'href="file__budget__1/exports/{name}"' in html
    assert "export-txt" in html  # stage timings
    assert c.get("/transcripts/file__budget__1/exports/budget.txt", headers=AUTH).text.startswith("[00:00:00]")
    bad = c.get("/transcripts/file__bad__3", headers=AUTH).text
    assert 'id="no-audio"' in bad and "<audio" not in bad


def test_rename_queues_a_reexport_that_rewrites_every_format(env):
    c, fake, settings = env["client"], env["fake"], env["settings"]
    out = settings.outbox / "budget"
    response = c.put("/api/transcripts/file__budget__1/speakers", json={"SPEAKER_00": "Diane", "SPEAKER_02": "Ravi"},
                     headers=AUTH)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["dag_run_id"] == "rename__1" and body["rename"]["state"] == "queued"
    assert fake.triggered[-1][:2] == ("file__budget__1", "diane.admin")
    assert "SPEAKER_00 → Diane" in fake.triggered[-1][2]
    assert "Diane" not in (out / "budget.txt").read_text()  # queued, not yet done

    apply_rename("file__budget__1", "rename__1", settings)  # what the DAG run does
    state = c.get("/api/transcripts/file__budget__1", headers=AUTH).json()
    assert state["rename"]["state"] == "success" and state["speaker_names"]["SPEAKER_00"] == "Diane"
    edit = state["speaker_edits"][-1]
    assert edit["user"] == "diane.admin" and edit["at"] and edit["changes"]["SPEAKER_00"] == {
        "from": "SPEAKER_00", "to": "Diane"}
    assert state["segments"][0]["speaker"] == "SPEAKER_00"  # the original labels stay in the JSON
    assert "[00:00:00] Diane: Welcome" in (out / "budget.txt").read_text()
    assert "Ravi" in (out / "budget.srt").read_text()
    exported = json.loads((out / "budget.json").read_text())
    assert exported["speaker_names"]["SPEAKER_00"] == "Diane" and exported["segments"][0]["speaker"] == "SPEAKER_00"
    assert b"Diane" in zipfile.ZipFile(out / "budget.docx").read("word/document.xml")
    assert (out / "budget.pdf").read_bytes().startswith(b"%PDF")
    assert not list(out.glob(".rename-*"))  # staging cleaned up
    hits = c.get("/api/transcripts", params={"q": "pump"}, headers=AUTH).json()
    assert hits[0]["speakers"] == ["Diane", "SPEAKER_01", "Ravi"]

    # merge: SPEAKER_01 is Diane too (named after the other label)
    assert c.put("/api/transcripts/file__budget__1/speakers", json={"SPEAKER_01": "SPEAKER_00"},
                 headers=AUTH).status_code == 202
    apply_rename("file__budget__1", "rename__2", settings)
    txt = (out / "budget.txt").read_text()
    assert txt.startswith("[00:00:00] Diane: Welcome to the budget meeting. The aquarium needs a new pump.")
    assert "SPEAKER_01" not in txt
    md = (out / "budget.md").read_text()
    assert md.count("| Diane |") == 1  # one person in the speaker table


def test_bad_renames_are_refused(env):
    c = env["client"]
    for body in ({"SPEAKER_09": "X"}, {"SPEAKER_00": 3}, {"SPEAKER_00": "x" * 81}, {"SPEAKER_00": "a\x07b"}, {}):
        assert c.put("/api/transcripts/file__garden__2/speakers", json=body, headers=AUTH).status_code == 422, body


def test_failed_reexport_keeps_the_previous_exports(env):
    c, settings = env["client"], env["settings"]
    out = settings.outbox / "garden"
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert c.put("/api/transcripts/file__garden__2/speakers", json={"SPEAKER_00": "Gardener"},
                 headers=AUTH).status_code == 202
    with pytest.raises(RuntimeError, match="export"):
        apply_rename("file__garden__2", "rename__x", settings.replace(fault_disk_full=True))
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert not list(out.glob(".rename-*"))
    state = c.get("/api/transcripts/file__garden__2", headers=AUTH).json()["rename"]
    assert state["state"] == "failed" and "previous exports kept" in state["text"]
    apply_rename("file__garden__2", "rename__y", settings)  # the retry succeeds
    assert "Gardener:" in (out / "garden.txt").read_text()
    assert c.get("/api/transcripts/file__garden__2", headers=AUTH).json()["rename"]["state"] == "success"


def test_speaker_names_are_escaped_everywhere(env):
    c, settings = env["client"], env["settings"]
    ws = make_run(settings, "file__esc__4", "esc.wav", ["Hello there.", "Formula time."],
                  ["SPEAKER_00", "SPEAKER_01"], formats=("txt", "csv", "md", "docx", "pdf", "json"))
    assert c.put("/api/transcripts/file__esc__4/speakers", json={"SPEAKER_00": SCRIPT, "SPEAKER_01": "=HYPERLINK(1)"},
                 headers=AUTH).status_code == 202
    apply_rename("file__esc__4", "rename__esc", settings)
    html = c.get("/transcripts/file__esc__4", headers=AUTH).text
    assert SCRIPT not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "\\u003cscript\\u003e" in html  # inside the page's JSON data too
    assert SCRIPT not in c.get("/", headers=AUTH).text
    out = settings.outbox / "esc"
    assert "SPEAKER_00" not in (out / "esc.txt").read_text() and SCRIPT in (out / "esc.txt").read_text()  # plain text
    docx_xml = zipfile.ZipFile(out / "esc.docx").read("word/document.xml").decode()
    assert SCRIPT not in docx_xml and "&lt;script&gt;alert(1)&lt;/script&gt;" in docx_xml
    from tasks.exports.pdf_writer import render_html
    from tasks.result import Transcript
    from tasks.stages import export_options, settings_of

    options = export_options(settings_of(ws, settings).replace(speaker_names={"SPEAKER_00": SCRIPT}))
    source = render_html(Transcript.load(ws.transcript_file), options)
    assert SCRIPT not in source and "&lt;script&gt;" in source
    assert (out / "esc.pdf").read_bytes().startswith(b"%PDF")
    assert "'=HYPERLINK(1)" in (out / "esc.csv").read_text(encoding="utf-8-sig")  # the CSV guard stays
    assert "\\<script\\>" in (out / "esc.md").read_text()


def test_index_rebuild_command(env):
    from tasks import cli
    from tasks.metrics import MetricsStore

    settings = env["settings"]
    store = MetricsStore(settings.metrics_database_url)
    index = TranscriptIndex(store)
    index.clear()
    assert index.search("pump")[1] == 0
    os.environ["SECURETRANSCRIBE_HOME"] = str(settings.home)
    try:
        assert cli.main(["index", "rebuild"]) == 0
    finally:
        del os.environ["SECURETRANSCRIBE_HOME"]
    items, total = index.search("pump")
    assert total == 1 and items[0].speakers[0] == "Diane"  # names saved later are indexed too
    assert {i.run_id for i in index.search("")[0]} >= {"file__budget__1", "file__garden__2", "file__bad__3"}
    store.close()


def test_purge_forgets_the_indexed_text(env, tmp_path):
    from tasks.metrics import MetricsStore
    from tasks.purge import purge

    settings = Settings.from_env(home=tmp_path, metrics_url=f"sqlite:///{tmp_path / 'metrics.db'}")
    ws = make_run(settings, "file__gone__5", "gone.wav", ["Confidential merger talk."], ["SPEAKER_00"])
    store = MetricsStore(settings.metrics_database_url)
    assert TranscriptIndex(store).search("merger")[1] == 1
    purge(ws.run_info().sha256, settings)
    assert TranscriptIndex(store).search("merger")[1] == 0
    assert TranscriptIndex(store).text_of("file__gone__5") is None
    store.close()


def test_postgres_full_text_search(tmp_path):
    from tasks.metrics import MetricsStore

    with postgres_or_skip() as pg:
        store = MetricsStore(pg.create_database("transcripts"))
        store.upgrade()
        store.record_file("r1", status="success", file_name="a.wav")
        store.record_file("r2", status="success", file_name="b.wav")
        index = TranscriptIndex(store)
        index.add("r1", "The aquarium needs a new pump.", file_name="a.wav", speakers=["Diane"])
        index.add("r2", "Roses bloom in June.", file_name="b.wav")
        assert [i.run_id for i in index.search("aquarium PUMP")[0]] == ["r1"]
        assert index.search("submarine")[1] == 0
        assert index.search('" AND (')[1] == 0
        assert index.search(None)[1] == 2
        index.remove(["r1"])
        assert index.search("pump")[1] == 0
        store.close()



def test_plugin_registers_the_view_first_in_the_navigation(monkeypatch):
    """The plugin file imports (Airflow present), declares the app and the nav view, and sorts before the
    metrics page (Airflow's UI shows plugin views in the order of GET /api/v2/plugins: by plugin name)."""
    import importlib.util

    monkeypatch.setenv("AIRFLOW_HOME", os.environ.get("AIRFLOW_HOME", str(Path.home() / "airflow")))
    plugins = Path(__file__).resolve().parent.parent / "plugins"
    loaded = {}
    for name in ("securetranscribe_transcripts", "transcription_metrics"):
        spec = importlib.util.spec_from_file_location(f"{name}_under_test", plugins / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        loaded[name] = module
    plugin = loaded["securetranscribe_transcripts"].TranscriptsPlugin
    assert plugin.name < loaded["transcription_metrics"].TranscriptionMetricsPlugin.name
    assert plugin.fastapi_apps[0]["url_prefix"] == "/securetranscribe-transcripts"
    view = plugin.external_views[0]
    assert view["name"] == "Transcripts" and view["url_route"] == "transcripts" and not view["href"].startswith("/")
    c = TestClient(plugin.fastapi_apps[0]["app"])
    for path in ("/", "/api/transcripts", "/api/transcripts/x/audio", "/transcripts/x"):
        assert c.get(path).status_code == 401, path
    assert c.put("/api/transcripts/x/speakers", json={"SPEAKER_00": "D"}).status_code == 401
    assert c.get("/icon.svg").status_code == 200


def test_files_in_progress_show_their_stage_and_progress(env):
    from datetime import UTC, datetime

    from tasks.metrics import MetricsStore

    settings, c = env["settings"], env["client"]
    ws = Workspace.for_run(settings.work, "file__long__6").create()
    atomic_write_json(ws.plan_file, {"spans": [[0, 240], [240, 480], [480, 600]], "target_s": 240})
    ws.chunks_dir.mkdir()
    atomic_write_json(ws.chunks_dir / "chunk-00000.json", {})
    ws.progress_file("diarize").write_text("embeddings 12/30 (40 %)")
    store = MetricsStore(settings.metrics_database_url)
    store.record_file("file__long__6", status="running", file_name="long.wav", audio_duration=600.0)
    for stage in ("transcribe", "diarize"):
        store.record_stage("file__long__6", stage, 1, start=datetime.now(UTC))
    store.close()
    html = c.get("/", headers=AUTH).text
    row = html[html.index('data-run-id="file__long__6"'):]
    row = row[:row.index("</tr>")]
    assert "transcribe, diarize · chunk 2/3, diarize: embeddings 12/30 (40 %)" in row
    assert 'class="open"' not in row  # no transcript yet: nothing to open
    assert c.get("/api/transcripts/file__long__6", headers=AUTH).status_code == 404


def test_reexports_of_one_file_are_serialised(env):
    """A re-export waits for the one already running on the same file (the lock in its run folder)."""
    import fcntl
    import threading

    settings, ws = env["settings"], env["meeting"]
    done = threading.Event()
    with open(ws.root / "reexport.lock", "a+") as held:  # as if another re-export of this file were running
        fcntl.flock(held, fcntl.LOCK_EX)
        worker = threading.Thread(target=lambda: (apply_rename("file__budget__1", "rename__z", settings), done.set()))
        worker.start()
        worker.join(timeout=3.0)
        assert worker.is_alive() and not done.is_set()  # waiting for the lock
        fcntl.flock(held, fcntl.LOCK_UN)
    worker.join(timeout=120)
    assert done.is_set()


def test_metrics_database_off(tmp_path):
    settings = Settings.from_env(home=tmp_path, metrics_url="none")
    c = TestClient(create_app(lambda: settings))
    assert c.get("/api/transcripts").status_code == 503
    assert "metrics database is off" in c.get("/").text
