"""The metrics web app behind the Airflow plugin, without Airflow: page, JSON, read-only exports."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.testclient import TestClient

from tasks.metrics import MetricsStore
from tasks.metrics.web import create_app, resolve_export
from tasks.settings import Settings
from tests.test_report import seed


@pytest.fixture
def home(tmp_path) -> Path:
    settings = Settings.from_env(home=tmp_path)
    store = MetricsStore(settings.metrics_database_url)
    store.upgrade()
    seed(store, settings.outbox)
    store.close()
    (tmp_path / "secret.txt").write_text("not an export")
    (settings.outbox / "meeting-01" / "escape.txt").symlink_to(tmp_path / "secret.txt")
    (settings.outbox / "meeting-01" / ".hidden").write_text("x")
    return tmp_path


@pytest.fixture
def client(home) -> TestClient:
    root = FastAPI()  # mounted as Airflow's api-server mounts plugin apps
    root.mount("/securetranscribe-metrics", create_app(lambda: Settings.from_env(home=home)))
    return TestClient(root)


def test_page_lists_runs_with_status_timings_and_exports(client):
    html = client.get("/securetranscribe-metrics/").text
    for text in ("Transcription metrics", "meeting-01.flac", "board-call.m4a", "notes.docx",
                 "InvalidAudio: no audio stream", 'badge success', 'badge quarantined', 'badge running',
                 "transcribe 4 min", "1 retry", "3 OOM", 'href="exports/meeting-03/meeting-03.srt"', "p95 RTF"):
        assert text in html, text
    assert html.count("<tr data-run-id=") == 8
    assert 'title="transcribe: ' in html and "x real time" in html


def test_page_escapes_recorded_text(home, client):
    store = MetricsStore(Settings.from_env(home=home).metrics_database_url)
    store.record_file("evil", status="failed", file_name="<script>alert(1)</script>.wav", error="<img src=x>")
    html = client.get("/securetranscribe-metrics/").text
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;.wav" in html
    assert "<img src=x>" not in html


def test_page_without_trailing_slash_redirects(client):
    r = client.get("/securetranscribe-metrics", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"].endswith("/securetranscribe-metrics/")


def test_json_api(client):
    files = client.get("/securetranscribe-metrics/api/files", params={"limit": 3}).json()
    assert len(files) == 3 and {"run_id", "status", "stages", "exports"} <= set(files[0])
    summary = client.get("/securetranscribe-metrics/api/summary").json()
    assert summary["overall"]["files"] == 8


def test_exports_are_served_read_only(client):
    r = client.get("/securetranscribe-metrics/exports/meeting-01/meeting-01.txt")
    assert r.status_code == 200 and r.text == "meeting-01/meeting-01.txt\n"
    assert r.headers["content-type"].startswith("text/plain") and r.headers["x-content-type-options"] == "nosniff"
    assert client.get("/securetranscribe-metrics/exports/meeting-01/meeting-01.json").headers[
        "content-type"] == "application/json"
    assert client.post("/securetranscribe-metrics/exports/meeting-01/meeting-01.txt").status_code == 405
    assert client.delete("/securetranscribe-metrics/exports/meeting-01/meeting-01.txt").status_code == 405


@pytest.mark.parametrize("path", [
    "../secret.txt", "..%2fsecret.txt", "meeting-01/../../secret.txt", "meeting-01/%2e%2e/%2e%2e/secret.txt",
    "%2fetc%2fpasswd", "meeting-01/escape.txt", "meeting-01/.hidden", "meeting-01", "", "nope/none.txt",
    "../metrics.db",
])
def test_exports_refuse_traversal(client, path):
    r = client.get(f"/securetranscribe-metrics/exports/{path}")
    assert r.status_code == 404, (path, r.status_code, r.text[:100])
    assert "not an export" not in r.text


def test_resolve_export(home):
    outbox = Settings.from_env(home=home).outbox
    assert resolve_export(outbox, "meeting-02/meeting-02.json") == (outbox / "meeting-02/meeting-02.json").resolve()
    for bad in ("/etc/passwd", "../secret.txt", "meeting-01/escape.txt", ".", "meeting-01/.hidden"):
        with pytest.raises(ValueError):
            resolve_export(outbox, bad)


def test_dependencies_guard_every_route(home):
    def deny(request: Request) -> None:
        if request.headers.get("x-user") != "ok":
            raise HTTPException(401)

    app = create_app(lambda: Settings.from_env(home=home), dependencies=[Depends(deny)])
    c = TestClient(app)
    for path in ("/", "/api/files", "/api/summary", "/exports/meeting-01/meeting-01.txt"):
        assert c.get(path).status_code == 401
        assert c.get(path, headers={"x-user": "ok"}).status_code == 200


def test_empty_and_unreachable_databases(tmp_path):
    c = TestClient(create_app(lambda: Settings.from_env(home=tmp_path / "fresh")))
    assert "No runs recorded yet" in c.get("/").text
    broken = Settings.from_env(home=tmp_path, metrics_url="postgresql+psycopg://u:p@127.0.0.1:1/none")
    html = TestClient(create_app(lambda: broken)).get("/").text
    assert "metrics database unavailable" in html and "u:p@" not in html


def test_plugin_module_registers_app_and_view(monkeypatch):
    """The plugin file imports (Airflow present) and declares the FastAPI app and the nav view."""
    import importlib.util

    monkeypatch.setenv("AIRFLOW_HOME", os.environ.get("AIRFLOW_HOME", str(Path.home() / "airflow")))
    path = Path(__file__).resolve().parent.parent / "plugins" / "transcription_metrics.py"
    spec = importlib.util.spec_from_file_location("transcription_metrics_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    plugin = module.TranscriptionMetricsPlugin
    assert plugin.fastapi_apps[0]["url_prefix"] == "/securetranscribe-metrics"
    view = plugin.external_views[0]
    assert view["url_route"] == "transcription-metrics" and not view["href"].startswith("/")
    c = TestClient(plugin.fastapi_apps[0]["app"])
    assert c.get("/").status_code == 401 and c.get("/icon.svg").status_code == 200
