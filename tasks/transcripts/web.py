"""The "Transcripts" view as a FastAPI app (mounted inside Airflow by ``plugins/securetranscribe_transcripts.py``).

Pages: ``/`` the processed files, newest first, paged, with full-text search (``?q=words``) and the progress
of files in progress; ``/transcripts/<run id>`` one transcript: speakers in colours, segments with times, the
archived original in an audio player (click a segment to play from there; the segment playing is
highlighted), speaker renaming, export links, stage timings; ``/transcripts/<run id>/exports/<name>``.

REST under ``/api/``: ``GET transcripts?q=&limit=&offset=`` (a list; ``X-Total-Count``), ``GET
transcripts/<run id>`` (the transcript JSON, plus ``speaker_names``, ``speaker_edits``, ``rename`` and
``run``), ``GET transcripts/<run id>/audio`` (HTTP Range, 206), ``PUT transcripts/<run id>/speakers``
(``{"SPEAKER_00": "Diane"}``: saved, and the re-export queued as an Airflow DAG run; 202).

Authentication and Airflow itself are the caller's: ``dependencies`` guard every route, :class:`AirflowLink`
triggers and reads the rename DAG runs and names the DAG of each processing run.
"""

from __future__ import annotations

import json
import math
import mimetypes
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import Body, FastAPI, HTTPException, Query, Request, params
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment
from markupsafe import Markup

from ..exports.common import PALETTE
from ..metrics.store import MetricsStore
from ..settings import Settings
from .index import Listed, TranscriptIndex, query_words
from .runs import (
    NotFound,
    archived_audio,
    export_file,
    export_files,
    final_record,
    progress,
    run_workspace,
    timings,
    transcript,
)
from .speakers import RenameError, effective_names, labels_of, read_record, save_names, set_export_state

PAGE_SIZE = 25
TEXT_TYPES = {".txt", ".csv", ".srt", ".vtt", ".md", ".rttm"}
MEDIA_TYPES = {".json": "application/json", ".pdf": "application/pdf",
               ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document"}
NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


@dataclass(frozen=True)
class AirflowLink:
    """What the view asks Airflow (the plugin provides these; tests pass fakes)."""

    trigger_rename: Callable[[str, str | None, str], str]
    """(run id, user, note) -> the DAG run id of the queued re-export."""
    run_state: Callable[[str], str | None]
    """A rename DAG run id -> its state (queued, running, success, failed)."""
    run_dags: Callable[[list[str]], dict[str, str]]
    """Processing run ids -> the DAG id each belongs to (for links to the run's grid)."""
    may_trigger: Callable[[Request], bool] = lambda request: True
    """Whether the logged-in user may start the re-export (else 403, nothing saved)."""


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "–"
    minutes, sec = divmod(int(round(float(seconds))), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{sec:02d}" if hours else f"{minutes}:{sec:02d}"


def _fmt_clock(seconds: float) -> str:
    minutes, sec = divmod(float(seconds), 60)
    hours, minutes = divmod(int(minutes), 60)
    return (f"{hours}:{minutes:02d}:" if hours else f"{minutes}:") + f"{sec:04.1f}"


def _fmt_date(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M") + " UTC" if value else "–"


def _script_json(value: Any) -> Markup:
    """JSON safe inside a <script> element (no ``</script>`` or ``<!--`` can close it)."""
    text = json.dumps(value, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e")
    return Markup(text.replace("&", "\\u0026"))


_ENV = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
_ENV.filters.update(duration=_fmt_duration, clock=_fmt_clock, date=_fmt_date, q=lambda s: quote(str(s), safe=""))

STYLE = """
 body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:16px 20px;color:#1f2933;font-size:14px}
 h1{font-size:20px;margin:0 0 6px} h2{font-size:16px;margin:20px 0 8px} .muted{color:#65717e} a{color:#2b6cb0}
 table{border-collapse:collapse;width:100%} th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #e4e7eb;
 vertical-align:top} th{font-weight:600;color:#3e4c59;background:#f5f7fa;font-size:13px} td.num{text-align:right}
 .badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff}
 .success{background:#2f855a}.failed{background:#c53030}.running{background:#2b6cb0}
 .quarantined{background:#c05621}.skipped{background:#718096}
 .err{color:#c53030;font-size:12px;max-width:420px;overflow-wrap:anywhere} .snip{font-size:12px;color:#52606d}
 mark{background:#fde68a} form.search input{width:420px;padding:6px 8px;font-size:14px}
 button{padding:5px 12px;font-size:14px;cursor:pointer} .pager a{margin-right:10px}
"""

LIST = _ENV.from_string("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Transcripts</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{{ style }}</style></head><body>
<h1>Transcripts</h1>
<form class="search" method="get" action="./" role="search">
<input type="search" name="q" value="{{ q }}" placeholder="Search the words of every transcript"
 aria-label="Search transcripts"> <button type="submit">Search</button>
{% if q %} <a href="./">show all</a>{% endif %}</form>
<p class="muted" id="summary">{{ total }} file{{ "" if total == 1 else "s" }}{% if q %} whose transcript holds
 “{{ q }}”{% endif %}{% if pages > 1 %} · page {{ page }} of {{ pages }}{% endif %}</p>
{% if error %}<p class="err">{{ error }}</p>{% endif %}
{% if rows %}
<table id="files"><tr><th>file</th><th>processed</th><th class="num">duration</th><th>language</th>
<th>speakers</th><th>status</th><th>run</th></tr>
{% for r in rows %}{% set f = r.item %}
<tr data-run-id="{{ f.run_id }}">
<td>{% if f.indexed %}<a class="open" href="transcripts/{{ f.run_id|q }}">{{ f.file_name or f.run_id }}</a>
{% else %}<b>{{ f.file_name or f.run_id }}</b>{% endif %}
{% if r.snippet %}<div class="snip">{% for part, hit in r.snippet %}
{% if hit %}<mark>{{ part }}</mark>{% else %}{{ part }}{% endif %}{% endfor %}</div>{% endif %}</td>
<td>{{ (f.processed_at or f.created_at)|date }}</td><td class="num">{{ f.duration|duration }}</td>
<td>{{ f.language or "–" }}</td>
<td>{% if f.speakers %}{{ f.speakers|join(", ") }}{% elif f.speaker_count is not none %}{{ f.speaker_count }}
{% else %}–{% endif %}</td>
<td><span class="badge {{ f.status }}">{{ f.status }}</span>
{% if r.progress %}<div class="snip progress">{{ r.progress }}</div>{% endif %}
{% if f.error and f.status != "running" %}<div class="err">{{ f.error[:200] }}</div>{% endif %}</td>
<td>{% if r.dag %}<a href="../dags/{{ r.dag|q }}/runs/{{ f.run_id|q }}" target="_top">grid</a>
{% else %}–{% endif %}</td>
</tr>
{% endfor %}</table>
{% elif not error %}<p class="muted">{{ "No transcript holds these words." if q else "No files processed yet." }}</p>
{% endif %}
<p class="pager">{% if page > 1 %}<a href="?{{ prev }}">← newer</a>{% endif %}
{% if page < pages %}<a href="?{{ next }}">older →</a>{% endif %}</p>
</body></html>
""")

TRANSCRIPT = _ENV.from_string("""<!doctype html>
<html lang="{{ t.language or 'und' }}"><head><meta charset="utf-8"><title>{{ name }} — Transcript</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{{ style }}
 .top{display:flex;gap:20px;flex-wrap:wrap;align-items:flex-start} .box{border:1px solid #d9dee3;border-radius:8px;
 padding:4px 14px 12px;max-width:540px} .box h2{margin-top:10px} audio{width:520px;max-width:100%}
 .segs{margin-top:10px;max-width:1000px}
 .seg{display:flex;gap:10px;padding:6px 8px;border-radius:6px;cursor:pointer;border-left:4px solid transparent}
 .seg:hover{background:#f5f7fa} .seg.playing{background:#fff7d6;border-left-color:#d69e2e}
 .seg .time{color:#65717e;font-variant-numeric:tabular-nums;min-width:64px;font-size:12px;padding-top:2px}
 .seg .who{font-weight:600;min-width:120px} .chip{display:inline-block;width:10px;height:10px;border-radius:5px;
 margin-right:6px} .box.names{max-width:430px} .names label{display:block;margin:4px 0}
 .names input{width:180px;padding:3px 6px}
 .names code{font-size:12px;color:#52606d;display:inline-block;min-width:92px} .exp a{margin-right:8px}
 .state{margin-left:8px;font-size:13px} .timing{columns:2;column-gap:28px;font-size:13px}
 .timing div{display:flex;justify-content:space-between;gap:12px;padding:1px 0} .timing b{font-weight:500}
</style></head><body>
<p><a href="../">← Transcripts</a></p>
<h1>{{ name }}</h1>
<div class="muted">{{ processed|date }} · {{ t.duration|duration }} · language {{ t.language or "–" }} ·
 {{ speakers|length }} speaker{{ "" if speakers|length == 1 else "s" }} · model {{ t.model or "–" }}
 {% if dag %}· <a href="../../dags/{{ dag|q }}/runs/{{ run_id|q }}" target="_top">run in Airflow</a>{% endif %}</div>
<div class="top">
<div class="box"><h2>Recording</h2>
{% if audio %}<audio id="player" controls preload="metadata" src="../api/transcripts/{{ run_id|q }}/audio"></audio>
<div class="muted">Click a line to play from there.</div>
{% else %}<p class="muted" id="no-audio">The original is not in the archive (the run did not succeed, or it was not
 an inbox file).</p>{% endif %}
<h2>Exports</h2><div class="exp">{% for e in exports %}<a href="{{ run_id|q }}/exports/{{ e|q }}" target="_blank"
 rel="noopener">{{ e }}</a>{% else %}<span class="muted">none</span>{% endfor %}</div></div>
<div class="box names"><h2>Speakers</h2>
<form id="names">{% for s in speakers %}
<label><span class="chip" style="background:{{ s.colour }}"></span><code>{{ s.label }}</code>
<input name="{{ s.label }}" value="{{ s.name }}" data-current="{{ s.name }}" aria-label="Name of {{ s.label }}"
 maxlength="80"></label>{% endfor %}
<button type="submit" id="save">Save names</button><span class="state" id="rename-state">{{ rename_text }}</span>
</form>
<div class="muted">Give two labels the same name (or a label's name another label) to merge them.
Saving writes every export again; the transcript is not redone.</div></div>
<div class="box"><h2>Stage timings</h2><div class="timing">{% for stage, sec in stage_times %}
<div><span>{{ stage }}</span><b>{{ "%.1f"|format(sec) }} s</b></div>{% else %}<span class="muted">none</span>
{% endfor %}</div></div>
</div>
<h2>Transcript</h2>
<div class="segs" id="segments">{% for s in segments %}
<div class="seg" data-index="{{ loop.index0 }}" data-start="{{ s.start }}" data-end="{{ s.end }}"
 data-speaker="{{ s.label }}"><span class="time">{{ s.start|clock }}</span>
<span class="who" style="color:{{ s.colour }}">{{ s.name }}</span><span class="text">{{ s.text }}</span></div>
{% else %}<p class="muted">No speech detected.</p>{% endfor %}</div>
<script type="application/json" id="data">{{ data }}</script>
<script>
(() => {
  const data = JSON.parse(document.getElementById("data").textContent);
  const api = "../api/transcripts/" + encodeURIComponent(data.run_id);
  const audio = document.getElementById("player");
  const segs = Array.from(document.querySelectorAll(".seg"));
  let current = null;
  function highlight() {
    const t = audio.currentTime;
    const found = segs.find(el => t >= +el.dataset.start && t < +el.dataset.end) || null;
    if (found === current) return;
    if (current) current.classList.remove("playing");
    current = found;
    if (current) { current.classList.add("playing"); current.scrollIntoView({block: "nearest"}); }
  }
  function playFrom(start) {
    const go = () => { audio.currentTime = start; highlight(); audio.play().catch(() => {}); };
    if (audio.readyState >= 1) go(); else audio.addEventListener("loadedmetadata", go, {once: true});
  }
  if (audio) {
    segs.forEach(el => el.addEventListener("click", () => playFrom(+el.dataset.start)));
    ["timeupdate", "seeked"].forEach(ev => audio.addEventListener(ev, highlight));
  }
  const form = document.getElementById("names");
  const state = document.getElementById("rename-state");
  function showNames(names, colours) {
    segs.forEach(el => {
      const who = el.querySelector(".who");
      who.textContent = names[el.dataset.speaker] || el.dataset.speaker;
      who.style.color = colours[el.dataset.speaker] || who.style.color;
    });
    form.querySelectorAll("input").forEach(input => {
      input.value = names[input.name] || input.name; input.dataset.current = input.value;
    });
  }
  async function poll() {
    const r = await fetch(api, {credentials: "same-origin", cache: "no-store"});
    if (!r.ok) { state.textContent = "could not read the state (" + r.status + ")"; return; }
    const t = await r.json();
    state.textContent = t.rename ? t.rename.text : "";
    state.dataset.state = t.rename ? t.rename.state : "";
    if (t.rename && (t.rename.state === "queued" || t.rename.state === "running")) setTimeout(poll, 2000);
  }
  form.addEventListener("submit", async ev => {
    ev.preventDefault();
    const changes = {};
    form.querySelectorAll("input").forEach(i => {
      if (i.value.trim() !== i.dataset.current) changes[i.name] = i.value;
    });
    if (!Object.keys(changes).length) { state.textContent = "nothing changed"; return; }
    state.textContent = "saving…";
    const r = await fetch(api + "/speakers", {method: "PUT", credentials: "same-origin",
      headers: {"Content-Type": "application/json"}, body: JSON.stringify(changes)});
    const body = await r.json().catch(() => ({}));
    if (!r.ok) { state.textContent = "not saved: " + (body.detail || r.status); return; }
    showNames(body.speaker_names, body.colours);
    state.textContent = body.rename.text; state.dataset.state = body.rename.state;
    setTimeout(poll, 1500);
  });
  if (state.textContent.includes("…")) setTimeout(poll, 2000);
})();
</script>
</body></html>
""")

RENAME_TEXT = {"queued": "re-export queued…", "running": "re-exporting every format…",
               "success": "exports updated", "failed": "re-export failed (previous exports kept)"}


def speaker_colours(labels: list[str], names: dict[str, str]) -> dict[str, str]:
    """One colour per person: a label's own (the PDF's palette), or that of the first label with its name."""
    first: dict[str, str] = {}
    out = {}
    for i, label in enumerate(labels):
        name = names.get(label, label)
        out[label] = first.setdefault(name, PALETTE[i % len(PALETTE)])
    return out


def snippet(text: str | None, words: list[str], width: int = 70) -> list[tuple[str, bool]]:
    """Around the first hit of any word: (text, is_hit) parts."""
    import re

    if not text or not words:
        return []
    pattern = re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)
    hit = pattern.search(text)
    if not hit:
        return []
    start, end = max(0, hit.start() - width), min(len(text), hit.end() + width)
    piece = text[start:end].replace("\n", " ")
    parts: list[tuple[str, bool]] = [("…", False)] if start else []
    pos = 0
    for m in pattern.finditer(piece):
        parts += [(piece[pos:m.start()], False), (m.group(0), True)]
        pos = m.end()
    parts.append((piece[pos:] + ("…" if end < len(text) else ""), False))
    return parts


class _Context:
    """Per process: settings, one store migrated once."""

    def __init__(self, settings_factory: Callable[[], Settings]) -> None:
        self._factory = settings_factory
        self._lock = threading.Lock()
        self._store: MetricsStore | None = None
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        with self._lock:
            if self._settings is None:
                self._settings = self._factory()
            return self._settings

    def index(self) -> TranscriptIndex:
        settings = self.settings
        with self._lock:
            if self._store is None:
                url = settings.metrics_database_url
                if not url:
                    raise RuntimeError("the metrics database is off (SECURETRANSCRIBE_METRICS_URL=none)")
                store = MetricsStore(url)
                store.upgrade()
                self._store = store
            return TranscriptIndex(self._store)


def create_app(
    settings_factory: Callable[[], Settings] = Settings.from_env,
    dependencies: Sequence[params.Depends] = (),
    airflow: AirflowLink | None = None,
) -> FastAPI:
    """The Transcripts app; ``dependencies`` guard every route (the plugin passes Airflow's login check)."""
    ctx = _Context(settings_factory)
    app = FastAPI(title="SecureTranscribe transcripts", docs_url=None, redoc_url=None, openapi_url=None,
                  dependencies=list(dependencies))

    def user_of(request: Request) -> str | None:
        return getattr(request.state, "airflow_user", None)

    def workspace(run_id: str):
        try:
            return run_workspace(ctx.settings, run_id)
        except NotFound:
            raise HTTPException(status_code=404, detail="no such transcript") from None

    def dags_of(run_ids: list[str]) -> dict[str, str]:
        if airflow is None or not run_ids:
            return {}
        try:
            return airflow.run_dags(run_ids)
        except Exception:  # links are a convenience
            return {}

    def rename_state(ws) -> dict[str, Any] | None:
        edits = read_record(ws)["edits"]
        if not edits:
            return None
        export = dict(edits[-1].get("export") or {})
        state = export.get("state", "queued")
        if state in ("queued", "running") and airflow is not None and export.get("dag_run_id"):
            try:
                seen = airflow.run_state(export["dag_run_id"])
            except Exception:
                seen = None
            if seen == "failed":
                state = "failed"
        text = RENAME_TEXT.get(state, state)
        if state == "failed" and export.get("error"):
            text += f": {export['error']}"
        return {**export, "state": state, "text": text}

    def listing(q: str | None, limit: int, offset: int) -> tuple[list[Listed], int]:
        try:
            index = ctx.index()
        except RuntimeError as exc:  # the metrics database is off: nothing to list or search
            raise HTTPException(status_code=503, detail=str(exc)) from None
        return index.search(q, limit=limit, offset=offset)

    def running_progress(items: list[Listed]) -> dict[str, str]:
        running = [i for i in items if i.status == "running"]
        if not running:
            return {}
        store = ctx.index().store
        out = {}
        for rec in store.files(run_ids=[i.run_id for i in running]):
            stages = [s.stage for s in rec.last_tries().values() if s.status == "running"]
            try:
                ws = run_workspace(ctx.settings, rec.run_id)
            except NotFound:
                continue
            out[rec.run_id] = progress(ws, stages).text()
        return out

    @app.get("/", response_class=HTMLResponse)
    def page(request: Request, q: str | None = None, page: int = Query(1, ge=1, le=100_000)) -> Response:
        if not request.url.path.endswith("/"):  # relative links need the trailing slash
            return RedirectResponse(request.url.replace(path=request.url.path + "/"), status_code=307)
        error, items, total = None, [], 0
        try:
            items, total = listing(q, PAGE_SIZE, (page - 1) * PAGE_SIZE)
        except HTTPException as exc:
            error = str(exc.detail)
        except Exception as exc:  # show the problem rather than a bare 500
            error = f"metrics database unavailable: {type(exc).__name__}"
        words = query_words(q)
        index = ctx.index() if words and not error else None
        prog = running_progress(items) if not error else {}
        dags = dags_of([i.run_id for i in items])
        rows = [{"item": i, "snippet": snippet(index.text_of(i.run_id), words) if index else [],
                 "progress": prog.get(i.run_id), "dag": dags.get(i.run_id)} for i in items]
        pages = max(1, math.ceil(total / PAGE_SIZE))
        link = lambda n: urlencode({**({"q": q} if q else {}), "page": n})  # noqa: E731
        html = LIST.render(style=STYLE, q=q or "", rows=rows, total=total, page=page, pages=pages, error=error,
                           prev=link(page - 1), next=link(page + 1))
        return HTMLResponse(html, headers=NO_STORE)

    def view(run_id: str) -> dict[str, Any]:
        """Everything the transcript page and GET transcripts/<id> show."""
        ws = workspace(run_id)
        try:
            data = transcript(ws)
        except NotFound:
            raise HTTPException(status_code=404, detail="no transcript for this run") from None
        settings = ctx.settings
        names = effective_names(ws, settings)
        labels = labels_of(data)
        info = ws.run_info()
        try:
            archived_audio(settings, ws)
            audio = True
        except NotFound:
            audio = False
        final = final_record(ws) or {}
        return {"ws": ws, "data": data, "names": {label: names.get(label, label) for label in labels},
                "labels": labels, "info": info, "audio": audio, "final": final,
                "colours": speaker_colours(labels, names), "exports": export_files(settings, ws),
                "timings": timings(ws), "rename": rename_state(ws), "edits": read_record(ws)["edits"]}

    @app.get("/transcripts/{run_id}", response_class=HTMLResponse)
    def transcript_page(run_id: str) -> Response:
        v = view(run_id)
        data, names, colours = v["data"], v["names"], v["colours"]
        speakers = [{"label": label, "name": names[label], "colour": colours[label]} for label in v["labels"]]
        segments = [{"start": s["start"], "end": s["end"], "label": s.get("speaker") or "",
                     "name": names.get(s.get("speaker") or "", s.get("speaker") or ""),
                     "colour": colours.get(s.get("speaker") or "", "#1f2933"), "text": str(s.get("text", "")).strip()}
                    for s in data.get("segments", [])]
        processed = datetime.fromtimestamp(v["ws"].transcript_file.stat().st_mtime, UTC)
        dag = dags_of([run_id]).get(run_id)
        html = TRANSCRIPT.render(
            style=STYLE, t=data, name=v["info"].name, run_id=run_id, processed=processed, speakers=speakers,
            segments=segments, audio=v["audio"], exports=v["exports"], stage_times=list(v["timings"].items()),
            dag=dag, rename_text=(v["rename"] or {}).get("text", ""),
            data=_script_json({"run_id": run_id, "names": names, "colours": colours}))
        return HTMLResponse(html, headers=NO_STORE)

    @app.get("/transcripts/{run_id}/exports/{name}")
    def export(run_id: str, name: str) -> Response:
        ws = workspace(run_id)
        try:
            target = export_file(ctx.settings, ws, name)
        except NotFound:
            raise HTTPException(status_code=404, detail="no such export") from None
        suffix = target.suffix.lower()
        media = "text/plain; charset=utf-8" if suffix in TEXT_TYPES else MEDIA_TYPES.get(suffix)
        if media is None:
            return FileResponse(target, media_type="application/octet-stream", filename=target.name, headers=NO_STORE)
        return FileResponse(target, media_type=media, filename=target.name, headers=NO_STORE,
                            content_disposition_type="inline")

    # -- REST ------------------------------------------------------------------------------------------
    @app.get("/api/transcripts")
    def api_list(q: str | None = None, limit: int = Query(50, ge=1, le=500),
                 offset: int = Query(0, ge=0)) -> Response:
        items, total = listing(q, limit, offset)
        return JSONResponse([i.to_api() for i in items], headers={"X-Total-Count": str(total), **NO_STORE})

    @app.get("/api/transcripts/{run_id}")
    def api_transcript(run_id: str) -> Response:
        v = view(run_id)
        info = v["info"]
        body = {**v["data"], "speaker_names": v["names"], "speaker_edits": v["edits"], "rename": v["rename"],
                "run": {"run_id": run_id, "file": info.name, "stem": info.stem, "outcome": v["final"].get("outcome"),
                        "audio": v["audio"], "exports": v["exports"], "timings": v["timings"]}}
        return JSONResponse(body, headers=NO_STORE)

    @app.get("/api/transcripts/{run_id}/audio")
    def api_audio(run_id: str) -> Response:
        ws = workspace(run_id)
        try:
            path = archived_audio(ctx.settings, ws)
        except NotFound:
            raise HTTPException(status_code=404, detail="no archived original for this run") from None
        media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return FileResponse(path, media_type=media, headers={"Cache-Control": "private, max-age=300",
                                                             "X-Content-Type-Options": "nosniff"})

    @app.put("/api/transcripts/{run_id}/speakers", status_code=202)
    def api_rename(request: Request, run_id: str, changes: dict[str, Any] = Body(...)) -> Response:
        ws = workspace(run_id)
        if not ws.transcript_file.is_file():
            raise HTTPException(status_code=404, detail="no transcript for this run")
        user = user_of(request)
        if airflow is not None and not airflow.may_trigger(request):
            raise HTTPException(status_code=403, detail="you may not start runs of the rename DAG")
        try:
            edit = save_names(ws, changes, user, ctx.settings)
        except RenameError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
        if airflow is None:
            set_export_state(ws, [edit["id"]], state="failed", error="no Airflow to run the re-export")
            raise HTTPException(status_code=503, detail="saved, but no Airflow to run the re-export")
        summary = ", ".join(f"{k} → {v['to']}" for k, v in edit["changes"].items())
        try:
            dag_run_id = airflow.trigger_rename(run_id, user, f"Speakers of {ws.run_info().name}: {summary}"
                                                f" (by {user or 'unknown'})")
        except Exception as exc:
            set_export_state(ws, [edit["id"]], state="failed", error=f"could not queue the re-export: {exc}"[:500])
            raise HTTPException(status_code=503, detail="saved, but the re-export could not be queued") from None
        set_export_state(ws, [edit["id"]], dag_run_id=dag_run_id)
        v = view(run_id)
        return JSONResponse({"edit": edit, "dag_run_id": dag_run_id, "speaker_names": v["names"],
                             "colours": v["colours"], "rename": v["rename"]}, status_code=202, headers=NO_STORE)

    return app
