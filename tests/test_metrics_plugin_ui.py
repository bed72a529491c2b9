"""The "Transcription metrics" page inside a real Airflow 3 api-server, logged in through headless Chromium."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tasks.metrics import MetricsStore
from tests.conftest import ROOT
from tests.servers import free_port, wait_until
from tests.test_report import seed

pytestmark = [pytest.mark.airflow, pytest.mark.timeout(900)]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
RUN_ID = f"manual__ui-check-{uuid.uuid4().hex[:8]}"


def _get(url: str, timeout: float = 5.0) -> int:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status


@pytest.fixture(scope="module")
def airflow_ui(tmp_path_factory) -> Iterator[dict[str, str]]:
    """api-server on a fresh SQLite AIRFLOW_HOME with our plugins folder and a seeded metrics database."""
    home = tmp_path_factory.mktemp("airflow-ui")
    st_home = home / "securetranscribe"
    metrics_url = f"sqlite:///{st_home / 'metrics.db'}"
    (home / "dags").mkdir()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "PYTHONPATH": str(ROOT),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "SECURETRANSCRIBE_HOME": str(st_home),
        "SECURETRANSCRIBE_METRICS_URL": metrics_url,
    }
    env.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", None)
    migrate = subprocess.run(["airflow", "db", "migrate"], env=env, cwd=home, capture_output=True, text=True,
                             timeout=600)
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]

    store = MetricsStore(metrics_url)
    store.upgrade()
    seed(store, st_home / "outbox")
    store.record_file(RUN_ID, status="success", file_name="ui-check.wav", sha256="12" * 32, audio_duration=42.0,
                      language="en", speakers=2, model="tiny.en", device="cpu", compute_type="int8",
                      outputs=["meeting-01/meeting-01.txt"])
    start = datetime.now(UTC) - timedelta(minutes=5)
    store.record_stage(RUN_ID, "transcribe", 1, start=start, end=start + timedelta(seconds=3.5), audio_seconds=42.0)
    store.close()

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(home / "api-server.log", "w")  # closed in teardown
    proc = subprocess.Popen(["airflow", "api-server", "-H", "127.0.0.1", "-p", str(port), "-w", "1"], env=env,
                            cwd=home, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: _get(f"{base}/api/v2/monitor/health") == 200, 300, "Airflow api-server",
                   interval=1.0, alive=lambda: proc.poll() is None)
        password_file = home / "simple_auth_manager_passwords.json.generated"
        password = wait_until(lambda: json.loads(password_file.read_text()).get("admin"), 30, "admin password")
        yield {"base": base, "password": password, "home": str(home)}
    except Exception:
        print((home / "api-server.log").read_text(errors="replace")[-5000:])
        raise
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def test_metrics_page_in_airflow_ui(airflow_ui, artifacts):
    from playwright.sync_api import expect, sync_playwright

    base = airflow_ui["base"]
    assert _get(f"{base}/securetranscribe-metrics/icon.svg") == 200
    with pytest.raises(urllib.error.HTTPError) as denied:  # not logged in: no metrics, no exports
        _get(f"{base}/securetranscribe-metrics/exports/meeting-01/meeting-01.txt")
    assert denied.value.code == 401

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1200})
            page.set_default_timeout(120_000)
            page.goto(f"{base}/plugin/transcription-metrics")
            page.get_by_label("Username").fill("admin")
            page.get_by_label("Password").fill(airflow_ui["password"])
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(re.compile(r".*/plugin/transcription-metrics.*"))
            nav = page.get_by_role("link", name=re.compile("Transcription metrics"))
            expect(nav.first).to_be_visible()

            frame = page.frame_locator("iframe")
            expect(frame.locator("h1")).to_have_text("Transcription metrics")
            row = frame.locator(f'tr[data-run-id="{RUN_ID}"]')
            expect(row).to_be_visible()
            expect(row).to_contain_text("ui-check.wav")
            expect(row).to_contain_text("success")
            expect(row).to_contain_text("transcribe 3.5 s")
            expect(frame.locator("tr[data-run-id]")).to_have_count(9)
            expect(frame.locator('tr[data-run-id] .badge.quarantined')).to_have_count(1)

            link = row.get_by_role("link", name="txt")
            href = link.get_attribute("href")
            assert href == "exports/meeting-01/meeting-01.txt"
            export = page.context.request.get(f"{base}/securetranscribe-metrics/{href}")  # with the login cookie
            assert export.status == 200 and export.text() == "meeting-01/meeting-01.txt\n"
            traversal = page.context.request.get(f"{base}/securetranscribe-metrics/exports/..%2fmetrics.db")
            assert traversal.status == 404

            inner = next(f for f in page.frames if "/securetranscribe-metrics/" in f.url)
            inner.wait_for_load_state("load")
            shot = artifacts / "metrics_plugin.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 20_000
        finally:
            browser.close()
