"""The Transcripts view in a real headless Chromium against the real embedded Airflow (``make run``'s supervisor).

Two corpus files go through the inbox; then, logged in: the view comes first in the navigation, a search for a
word of one file lists only that file, its page plays from the third segment (the audio element's currentTime
lands inside it, and that segment is highlighted), and renaming a speaker shows the new name on the page and,
after the ``securetranscribe_rename`` DAG run, in the TXT, SRT, DOCX and PDF files.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.error
import urllib.request
import zipfile

import pytest

from tests.airflow_harness import running_airflow, wait_until
from tests.conftest import corpus_file

pytestmark = [pytest.mark.airflow, pytest.mark.slow, pytest.mark.timeout(1800)]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--autoplay-policy=no-user-gesture-required"]
PROCESS = "securetranscribe_process"
FILES = ("dev00.flac", "trn02.flac")
WORD = re.compile(r"[a-z]{5,}")


def _words(transcript: dict) -> set[str]:
    return set(WORD.findall(" ".join(s["text"] for s in transcript["segments"]).lower()))


@pytest.fixture(scope="module")
def af(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("transcripts-ui")
    with running_airflow(tmp, SECURETRANSCRIBE_MODEL="tiny.en", SECURETRANSCRIBE_INBOX_STABLE_S="2",
                         SECURETRANSCRIBE_FORMATS="txt,json,srt,docx,pdf") as airflow:
        for name in FILES:
            shutil.copyfile(corpus_file(f"ami/{name}"), airflow.settings_home / "inbox" / name)
        try:
            runs = airflow.wait_for_runs(PROCESS, count=2, timeout=1200)
            assert [r["state"] for r in runs] == ["success", "success"], runs
            yield airflow
        except Exception:
            print(airflow.tail())
            raise


def test_read_search_play_and_rename_in_the_airflow_ui(af, artifacts):
    from playwright.sync_api import expect, sync_playwright

    home, base = af.settings_home, af.base
    runs = {r["conf"]["path"].rsplit("/", 1)[-1]: r["dag_run_id"] for r in af.runs(PROCESS)}
    texts = {name: json.loads((home / "work" / runs[name] / "transcript.json").read_text()) for name in FILES}
    chosen = max(FILES, key=lambda n: len(texts[n]["segments"]))  # the file we read, play and rename
    other = next(n for n in FILES if n != chosen)
    assert len(texts[chosen]["segments"]) >= 3, texts[chosen]["segments"]
    word = sorted(_words(texts[chosen]) - _words(texts[other]))[0]
    run_id, stem = runs[chosen], chosen.rsplit(".", 1)[0]
    third = texts[chosen]["segments"][2]
    label = third["speaker"]

    for path in ("/securetranscribe-transcripts/", "/securetranscribe-transcripts/api/transcripts",
                 f"/securetranscribe-transcripts/api/transcripts/{run_id}/audio"):
        with pytest.raises(urllib.error.HTTPError) as denied:  # no login, nothing
            urllib.request.urlopen(base + path, timeout=30)
        assert denied.value.code == 401, path
    names = [v["name"] for p in af.api("GET", "/plugins")["plugins"] for v in p["external_views"]
             if v.get("destination") == "nav"]
    assert names[0] == "Transcripts", names

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.set_default_timeout(120_000)
            page.goto(f"{base}/plugin/transcripts")
            page.get_by_label("Username").fill("admin")
            page.get_by_label("Password").fill(af.password())
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(re.compile(r".*/plugin/transcripts.*"))
            expect(page.get_by_role("link", name="Transcripts", exact=True).first).to_be_visible()

            frame = page.frame_locator("iframe")
            expect(frame.locator("h1")).to_have_text("Transcripts")
            try:
                expect(frame.locator("tr[data-run-id]")).to_have_count(2)
            except AssertionError:
                print(frame.locator("body").inner_html(), af.tail(200))
                raise
            frame.get_by_label("Search transcripts").fill(word)
            frame.get_by_role("button", name="Search").click()
            expect(frame.locator("#summary")).to_contain_text(f"whose transcript holds “{word}”")
            rows = frame.locator("tr[data-run-id]")
            expect(rows).to_have_count(1)
            expect(rows.first).to_have_attribute("data-run-id", run_id)
            expect(rows.first.locator("mark").first).to_have_text(re.compile(word, re.IGNORECASE))
            page.screenshot(path=str(artifacts / "transcripts_list.png"))

            rows.first.get_by_role("link", name=chosen).click()
            expect(frame.locator("h1")).to_have_text(chosen)
            segs = frame.locator(".seg")
            expect(segs).to_have_count(len(texts[chosen]["segments"]))
            inner = page.locator("iframe").element_handle().content_frame()
            assert "/securetranscribe-transcripts/transcripts/" in inner.url
            inner.wait_for_function("() => document.getElementById('player').readyState >= 1", timeout=60_000)
            segs.nth(2).click()
            inner.wait_for_function(
                """([start, end]) => { const a = document.getElementById('player');
                   const seg = document.querySelectorAll('.seg')[2];
                   return a.currentTime >= start && a.currentTime < end && seg.classList.contains('playing'); }""",
                arg=[third["start"], third["end"]], timeout=30_000)
            inner.evaluate("() => document.getElementById('player').pause()")
            at = inner.evaluate("() => document.getElementById('player').currentTime")
            assert third["start"] <= at < third["end"] + 1.0, (at, third)
            ranged = page.context.request.get(f"{base}/securetranscribe-transcripts/api/transcripts/{run_id}/audio",
                                              headers={"Range": "bytes=0-1023"})
            assert ranged.status == 206 and len(ranged.body()) == 1024

            frame.get_by_label(f"Name of {label}").fill("Diane")
            frame.get_by_role("button", name="Save names").click()
            expect(frame.locator(f'.seg[data-speaker="{label}"] .who').first).to_have_text("Diane")
            expect(frame.locator("#rename-state")).to_have_text("exports updated", timeout=600_000)
            page.screenshot(path=str(artifacts / "transcript_page.png"))
        finally:
            browser.close()

    out = home / "outbox" / stem
    assert "Diane:" in (out / f"{stem}.txt").read_text()
    assert "Diane" in (out / f"{stem}.srt").read_text()
    assert b"Diane" in zipfile.ZipFile(out / f"{stem}.docx").read("word/document.xml")
    pdf = subprocess.run(["pdftotext", str(out / f"{stem}.pdf"), "-"], capture_output=True, text=True, check=True)
    assert "Diane" in pdf.stdout
    assert json.loads((out / f"{stem}.json").read_text())["segments"][2]["speaker"] == label  # labels kept
    renames = wait_until(lambda: [r for r in af.runs("securetranscribe_rename") if r["state"] == "success"], 60,
                         2.0, "the rename run")
    assert renames[0]["conf"] == {"run_id": run_id} and "Diane" in (renames[0].get("note") or "")
    edits = json.loads((home / "work" / run_id / "speakers.json").read_text())["edits"]
    assert edits[-1]["user"] == "admin" and edits[-1]["changes"][label]["to"] == "Diane"
