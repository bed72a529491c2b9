"""The "Transcription metrics" web page as a FastAPI app (mounted inside Airflow by ``plugins/``).

Routes: ``/`` the HTML page (recent files, status, per-stage timing bars, export links, stage summary),
``/api/files`` and ``/api/summary`` (JSON), ``/exports/<stem>/<file>`` (read-only files of the outbox;
anything resolving outside it is refused). Authentication is the caller's: pass ``dependencies``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request, params
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from jinja2 import Environment

from ..settings import Settings
from ..stages import STAGE_NAMES, stage_sort_key
from .store import FileRecord, MetricsStore, StageRecord

PALETTE = ("#9c755f", "#bab0ac", "#4e79a7", "#76b7b2", "#f28e2b", "#59a14f", "#edc948", "#b07aa1", "#e15759")
STAGE_COLOURS = dict(zip(STAGE_NAMES, PALETTE))
"""One colour per stage of the pipeline (``export-pdf`` takes ``export``'s)."""
OTHER_COLOURS = ("#ff9da7", "#86bcb6", "#d37295", "#fabfd2")
TEXT_TYPES = {".txt", ".csv", ".srt", ".vtt", ".md", ".rttm", ".log"}
MEDIA_TYPES = {".json": "application/json", ".pdf": "application/pdf",
               ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document"}


def stage_colour(stage: str) -> str:
    return STAGE_COLOURS.get(stage.split("-", 1)[0]) or OTHER_COLOURS[sum(map(ord, stage)) % len(OTHER_COLOURS)]


def resolve_export(outbox: Path, relative: str) -> Path:
    """The file ``outbox/relative``; ValueError when it is not a regular file inside the outbox
    (``..``, absolute paths, symlinks pointing out, hidden names)."""
    root = outbox.resolve()
    parts = Path(relative).parts
    if not relative or Path(relative).is_absolute() or any(p in ("..", ".") or p.startswith(".") for p in parts):
        raise ValueError(f"refused export path {relative!r}")
    target = (root / relative).resolve()
    if not target.is_relative_to(root) or target == root or not target.is_file():
        raise ValueError(f"no export {relative!r}")
    return target


def export_links(record: FileRecord, outbox: Path) -> list[str]:
    """Paths relative to the outbox of the run's exports that exist: the recorded ``outputs``,
    else the files of ``outbox/<stem of file name>/``."""
    root = outbox.resolve()
    candidates: list[str] = []
    for out in record.outputs or []:
        path = Path(out)
        if path.is_absolute():
            try:
                path = path.resolve().relative_to(root)
            except ValueError:
                continue
        candidates.append(path.as_posix())
    if not candidates and record.file_name:
        folder = root / Path(record.file_name).stem
        if folder.is_dir():
            candidates = [f"{folder.name}/{p.name}" for p in sorted(folder.iterdir())]
    links = []
    for rel in candidates:
        try:
            resolve_export(root, rel)
        except ValueError:
            continue
        links.append(rel)
    return links


@dataclass
class Segment:
    stage: str
    seconds: float
    width: float
    colour: str
    title: str
    running: bool


def _stage_title(s: StageRecord, seconds: float, tries: int) -> str:
    parts = [f"{s.stage}: {seconds:.1f} s"]
    if s.rtf:
        parts.append(f"{s.rtf:.1f}x real time")
    parts.append(f"try {s.try_number}" + (f" of {tries}" if tries > 1 else ""))
    if s.status != "success":
        parts.append(s.status)
    if s.oom_retries:
        parts.append(f"{s.oom_retries} GPU OOM retries")
    if s.cpu_fallback:
        parts.append("CPU fallback")
    if s.chunk_s:
        parts.append(f"chunk {s.chunk_s:.0f} s")
    if s.batch_size:
        parts.append(f"batch {s.batch_size}")
    if s.peak_rss_mb:
        parts.append(f"RSS {s.peak_rss_mb:,.0f} MB")
    if s.peak_gpu_mb:
        parts.append(f"GPU {s.peak_gpu_mb:,.0f} MB")
    return ", ".join(parts)


def timing_rows(files: Sequence[FileRecord], now: datetime | None = None) -> list[dict[str, Any]]:
    """Per file: bar segments (last try of each stage, width relative to the slowest file), retries."""
    now = now or datetime.now(UTC)
    totals: list[tuple[FileRecord, list[tuple[StageRecord, float, int]]]] = []
    for f in files:
        tries: dict[str, int] = {}
        for s in f.stages:
            tries[s.stage] = tries.get(s.stage, 0) + 1
        last = sorted(f.last_tries().values(), key=lambda s: s.start)
        rows = [(s, s.seconds if s.seconds is not None else max(0.0, (now - s.start).total_seconds()), tries[s.stage])
                for s in last]
        totals.append((f, rows))
    longest = max((sum(sec for _, sec, _ in rows) for _, rows in totals), default=0.0) or 1.0
    out = []
    for f, rows in totals:
        segments = [Segment(s.stage, sec, 100.0 * sec / longest, stage_colour(s.stage), _stage_title(s, sec, n),
                            s.status == "running") for s, sec, n in rows]
        started = min((s.start for s in f.stages), default=f.created_at)
        out.append({"file": f, "started": started, "segments": segments, "wall": sum(x.seconds for x in segments),
                    "retries": sum(n - 1 for _, _, n in rows),
                    "oom": sum(s.oom_retries for s in f.stages), "failed_tries": sum(s.status == "failed"
                                                                                      for s in f.stages)})
    return out


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "–"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _fmt_num(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{float(value):,.{digits}f}"


_ENV = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
_ENV.filters.update(duration=_fmt_duration, num=_fmt_num)
PAGE = _ENV.from_string("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Transcription metrics</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:16px 20px;color:#1f2933;font-size:14px}
 h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:22px 0 8px} .muted{color:#65717e}
 .cards{display:flex;gap:10px;flex-wrap:wrap;margin:12px 0}
 .card{border:1px solid #d9dee3;border-radius:8px;padding:8px 14px;min-width:110px}
 .card b{display:block;font-size:20px} table{border-collapse:collapse;width:100%}
 th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #e4e7eb;vertical-align:top}
 th{font-weight:600;color:#3e4c59;background:#f5f7fa;font-size:13px} td.num,th.num{text-align:right}
 .badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff}
 .success{background:#2f855a}.failed{background:#c53030}.running{background:#2b6cb0}
 .quarantined{background:#c05621}.skipped{background:#718096}
 .bar{display:flex;height:16px;background:#f0f2f5;border-radius:3px;overflow:hidden;min-width:240px}
 .seg{height:100%}
 .seg.run{background-image:repeating-linear-gradient(45deg,rgba(255,255,255,.45) 0 6px,transparent 6px 12px)}
 .stages{font-size:12px;color:#52606d;margin-top:3px}
 .legend span{display:inline-block;margin-right:12px;font-size:12px}
 .legend i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
 .err{color:#c53030;font-size:12px;max-width:380px;overflow-wrap:anywhere} a{color:#2b6cb0}
 code{font-size:11px;color:#65717e;word-break:break-all} td.nw,th.nw{white-space:nowrap}
 .exp a{margin-right:6px;font-size:12px}
</style></head><body>
<h1>Transcription metrics</h1>
<div class="muted">{{ files|length }} most recent file(s) · summary over the last {{ days }} day(s) ·
 generated {{ now.strftime("%Y-%m-%d %H:%M:%S") }} UTC · real-time factor = audio seconds per wall second</div>
{% if error %}<p class="err">{{ error }}</p>{% endif %}
{% if overall %}
<div class="cards">
 <div class="card"><b>{{ overall.files }}</b>files</div>
 <div class="card"><b>{{ overall.files_success }}</b>succeeded</div>
 <div class="card"><b>{{ overall.files_failed + overall.files_quarantined }}</b>failed / quarantined</div>
 <div class="card"><b>{{ overall.audio_hours|num(2) }}</b>audio hours</div>
 <div class="card"><b>{{ overall.rtf_end_to_end|num }}×</b>end-to-end speed</div>
 <div class="card"><b>{{ overall.oom_retries }}</b>GPU OOM retries</div>
 <div class="card"><b>{{ overall.stage_retries }}</b>task retries</div>
</div>
{% endif %}
{% if stages %}
<h2>Stages</h2>
<table><tr><th>stage</th><th class="num">attempts</th><th class="num">failed</th><th class="num">mean RTF</th>
<th class="num">p95 RTF</th><th class="num">mean time</th><th class="num">share of wall time</th>
<th class="num">OOM retries</th><th class="num">peak RSS MB</th><th class="num">peak GPU MB</th></tr>
{% for s in stages %}
<tr><td><i style="display:inline-block;width:10px;height:10px;background:{{ colour(s.stage) }}"></i> {{ s.stage }}</td>
<td class="num">{{ s.attempts }}</td><td class="num">{{ s.failed }}</td><td class="num">{{ s.rtf_mean|num }}</td>
<td class="num">{{ s.rtf_p95|num }}</td><td class="num">{{ s.seconds_mean|duration }}</td>
<td class="num">{{ s.wall_share_pct|num }} %</td><td class="num">{{ s.oom_retries }}</td>
<td class="num">{{ s.peak_rss_mb|num(0) }}</td><td class="num">{{ s.peak_gpu_mb|num(0) }}</td></tr>
{% endfor %}
</table>
{% endif %}
<h2>Recent files</h2>
{% if not rows %}<p class="muted">No runs recorded yet.</p>{% else %}
<div class="legend">{% for name, c in legend %}
<span><i style="background:{{ c }}"></i>{{ name }}</span>{% endfor %}</div>
<table>
<tr><th>file</th><th>status</th><th class="num">audio</th><th>language / speakers</th><th>model</th>
<th>stage timings</th><th>exports</th></tr>
{% for r in rows %}{% set f = r.file %}
<tr data-run-id="{{ f.run_id }}">
<td><b>{{ f.file_name or "?" }}</b><div><code>{{ f.run_id }}</code></div>
<div class="muted">{{ r.started.strftime("%Y-%m-%d %H:%M") }} UTC</div></td>
<td><span class="badge {{ f.status }}">{{ f.status }}</span>
{% if f.error %}<div class="err">{{ f.error[:300] }}</div>{% endif %}</td>
<td class="num nw">{{ f.audio_duration|duration }}</td>
<td>{{ f.language or "–" }} / {{ f.speakers if f.speakers is not none else "–" }}</td>
<td>{{ f.model or "–" }}<div class="muted">{{ f.device or "" }} {{ f.compute_type or "" }}</div></td>
<td><div class="bar">{% for s in r.segments %}<div class="seg{{ ' run' if s.running }}" title="{{ s.title }}"
 style="width:{{ '%.2f'|format(s.width) }}%;background-color:{{ s.colour }}"></div>{% endfor %}</div>
<div class="stages">{% for s in r.segments %}
{{ s.stage }} {{ s.seconds|duration }}{{ " · " if not loop.last }}{% endfor %}
{% if r.segments %} = {{ r.wall|duration }}{% endif %}
{% if r.retries %} · {{ r.retries }} retr{{ "y" if r.retries == 1 else "ies" }}{% endif %}
{% if r.oom %} · {{ r.oom }} OOM{% endif %}</div></td>
<td class="exp">{% for link in r.links %}
<a href="exports/{{ link }}" target="_blank" rel="noopener" title="{{ link }}">{{ link.rsplit(".", 1)[-1] }}</a>
{% else %}<span class="muted">–</span>{% endfor %}</td>
</tr>
{% endfor %}
</table>
{% endif %}
</body></html>
""")


class _Context:
    """Per process: settings from the environment, one store, migrated once."""

    def __init__(self, settings_factory: Callable[[], Settings]) -> None:
        self._factory = settings_factory
        self._lock = threading.Lock()
        self._store: MetricsStore | None = None
        self.settings: Settings | None = None

    def store(self) -> MetricsStore:
        with self._lock:
            if self._store is None:
                self.settings = self._factory()
                store = MetricsStore(self.settings.metrics_database_url)
                store.upgrade()
                self._store = store
            return self._store

    def outbox(self) -> Path:
        self.store()
        assert self.settings is not None
        return self.settings.outbox


def create_app(
    settings_factory: Callable[[], Settings] = Settings.from_env,
    dependencies: Sequence[params.Depends] = (),
) -> FastAPI:
    """The metrics app; ``dependencies`` guard every route (the Airflow plugin passes its login check)."""
    ctx = _Context(settings_factory)
    app = FastAPI(title="SecureTranscribe metrics", docs_url=None, redoc_url=None, openapi_url=None,
                  dependencies=list(dependencies))

    @app.get("/", response_class=HTMLResponse)
    def page(request: Request, limit: int = Query(100, ge=1, le=1000), days: float = Query(7, gt=0)) -> Response:
        from .report import build

        if not request.url.path.endswith("/"):  # relative export links need the trailing slash
            return RedirectResponse(request.url.replace(path=request.url.path + "/"), status_code=307)
        now = datetime.now(UTC)
        error = None
        try:
            store = ctx.store()
            files = store.recent_files(limit)
            report = build(store, now - timedelta(days=days))
            overall, stages = report.overall, report.stages.to_dict(orient="records")
        except Exception as exc:  # show the problem on the page rather than a bare 500
            files, overall, stages, error = [], None, [], f"metrics database unavailable: {type(exc).__name__}: {exc}"
        rows = timing_rows(files, now)
        outbox = ctx.settings.outbox if ctx.settings else Settings.from_env().outbox
        for row in rows:
            row["links"] = export_links(row["file"], outbox)
        seen = sorted({s.stage for r in rows for s in r["segments"]}, key=stage_sort_key)
        html = PAGE.render(files=files, rows=rows, overall=overall, stages=stages, days=_fmt_num(days, 0), now=now,
                           error=error, colour=stage_colour, legend=[(s, stage_colour(s)) for s in seen])
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    @app.get("/api/files")
    def api_files(limit: int = Query(100, ge=1, le=1000)) -> list[dict[str, Any]]:
        outbox = ctx.outbox()
        return [{**f.to_dict(), "exports": export_links(f, outbox)} for f in ctx.store().recent_files(limit)]

    @app.get("/api/summary")
    def api_summary(days: float = Query(7, gt=0)) -> dict[str, Any]:
        from .report import build

        return build(ctx.store(), datetime.now(UTC) - timedelta(days=days)).to_dict()

    @app.get("/exports/{path:path}")
    def export(path: str) -> Response:
        try:
            target = resolve_export(ctx.outbox(), path)
        except ValueError:
            raise HTTPException(status_code=404, detail="no such export") from None
        suffix = target.suffix.lower()
        media = "text/plain; charset=utf-8" if suffix in TEXT_TYPES else MEDIA_TYPES.get(suffix)
        headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}
        if media is None:
            return FileResponse(target, media_type="application/octet-stream", filename=target.name,
                                headers=headers)
        return FileResponse(target, media_type=media, filename=target.name, headers=headers,
                            content_disposition_type="inline")

    return app
