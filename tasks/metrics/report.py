"""``securetranscribe report``: pandas summary of the metrics database and a matplotlib plot.

Real-time factor (RTF) here is audio seconds per wall second: 20 means twenty times faster than real time.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from ..stages import stage_sort_key
from .store import MetricsStore

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``7d``, ``12h``, ``30m``, ``2w`` (ago) or an ISO date/datetime (naive means local time)."""
    match = _RELATIVE.match(text)
    if match:
        now = now or datetime.now(UTC)
        return now - timedelta(**{_UNITS[match.group(2).lower()]: float(match.group(1))})
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--since {text!r}: expected e.g. 7d, 12h, 30m or 2026-11-01[T12:00]") from None
    return value.astimezone(UTC)


@dataclass
class Report:
    """Overall numbers, per-stage table and the raw frames the plot uses."""

    since: datetime | None
    overall: dict[str, Any]
    stages: pd.DataFrame
    files: pd.DataFrame
    attempts: pd.DataFrame

    def to_dict(self) -> dict[str, Any]:
        stages = json.loads(self.stages.to_json(orient="records"))
        return {"since": self.since.isoformat() if self.since else None, "overall": self.overall, "stages": stages}


def frames(store: MetricsStore, since: datetime | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(files, stage attempts) as DataFrames; timestamps are UTC."""
    files = pd.DataFrame([{k: v for k, v in f.to_dict().items() if k != "stages"} for f in store.files(since=since)])
    attempts = pd.DataFrame([s.to_dict() for s in store.stage_attempts(since=since)])
    for frame, cols in ((files, ("created_at", "updated_at")), (attempts, ("start", "end"))):
        for col in cols:
            if col in frame:
                frame[col] = pd.to_datetime(frame[col], utc=True, format="ISO8601")
    return files, attempts


def build(store: MetricsStore, since: datetime | None = None) -> Report:
    """Summarise: files, audio hours, mean/p95 RTF per stage, share of wall time, OOM retries, failures."""
    files, attempts = frames(store, since)
    overall: dict[str, Any] = {"files": len(files)}
    statuses = files["status"].value_counts().to_dict() if len(files) else {}
    for status in ("success", "failed", "quarantined", "skipped", "running"):
        overall[f"files_{status}"] = int(statuses.get(status, 0))
    ok = files[files["status"] == "success"] if len(files) else files
    audio_s = float(ok["audio_duration"].fillna(0).sum()) if len(ok) else 0.0
    overall["audio_hours"] = round(audio_s / 3600, 3)
    if len(attempts):
        done = attempts[attempts["status"] != "running"]
        wall = float(done["seconds"].fillna(0).sum())
        ok_attempts = done[done["run_id"].isin(ok["run_id"])] if len(ok) else done.iloc[0:0]
        ok_wall = float(ok_attempts["seconds"].fillna(0).sum())
        overall.update(
            stage_attempts=len(done),
            stage_failures=int((done["status"] == "failed").sum()),
            stage_retries=int((done["try_number"] > 1).sum()),
            oom_retries=int(done["oom_retries"].sum()),
            cpu_fallbacks=int(done["cpu_fallback"].sum()),
            wall_seconds=round(wall, 2),
            wall_hours=round(wall / 3600, 3),
            rtf_end_to_end=round(audio_s / ok_wall, 2) if ok_wall else None,
        )
        rows = []
        for stage, g in done.groupby("stage", sort=False):
            rtf = g.loc[g["status"] == "success", "rtf"].dropna()  # a failed try's speed means little
            seconds = g["seconds"].fillna(0)
            rows.append({
                "stage": stage,
                "attempts": len(g),
                "failed": int((g["status"] == "failed").sum()),
                "retries": int((g["try_number"] > 1).sum()),
                "rtf_mean": rtf.mean() if len(rtf) else None,
                "rtf_p05": rtf.quantile(0.05) if len(rtf) else None,
                "rtf_p95": rtf.quantile(0.95) if len(rtf) else None,
                "seconds_mean": seconds.mean(),
                "seconds_total": seconds.sum(),
                "wall_share_pct": 100 * seconds.sum() / wall if wall else None,
                "oom_retries": int(g["oom_retries"].sum()),
                "cpu_fallbacks": int(g["cpu_fallback"].sum()),
                "peak_rss_mb": g["peak_rss_mb"].max(),
                "peak_gpu_mb": g["peak_gpu_mb"].max(),
            })
        stages = pd.DataFrame(rows)
        stages = stages.iloc[sorted(range(len(stages)), key=lambda i: stage_sort_key(stages["stage"].iloc[i]))]
        stages = stages.reset_index(drop=True).round(2)
    else:
        overall.update(stage_attempts=0, stage_failures=0, stage_retries=0, oom_retries=0, cpu_fallbacks=0,
                       wall_seconds=0.0, wall_hours=0.0, rtf_end_to_end=None)
        stages = pd.DataFrame(columns=["stage", "attempts", "failed", "retries", "rtf_mean", "rtf_p05", "rtf_p95",
                                       "seconds_mean", "seconds_total", "wall_share_pct", "oom_retries",
                                       "cpu_fallbacks", "peak_rss_mb", "peak_gpu_mb"])
    return Report(since=since, overall=overall, stages=stages, files=files, attempts=attempts)


def render(report: Report, fmt: str = "table") -> str:
    """``table`` (for people), ``csv`` (one row per stage plus an ``(all)`` row) or ``json``."""
    if fmt == "json":
        return json.dumps(report.to_dict(), indent=2)
    if fmt == "csv":
        o = report.overall
        total = {"stage": "(all)", "attempts": o["stage_attempts"], "failed": o["stage_failures"],
                 "retries": o["stage_retries"], "rtf_mean": o["rtf_end_to_end"],
                 "seconds_total": o["wall_seconds"], "wall_share_pct": 100.0 if o["wall_seconds"] else None,
                 "oom_retries": o["oom_retries"], "cpu_fallbacks": o["cpu_fallbacks"], "files": o["files"],
                 "files_failed": o["files_failed"], "audio_hours": o["audio_hours"]}
        frame = pd.concat([report.stages, pd.DataFrame([total])], ignore_index=True)
        for col in ("attempts", "failed", "retries", "oom_retries", "cpu_fallbacks", "files", "files_failed"):
            frame[col] = frame[col].astype("Int64")
        return frame.to_csv(index=False)
    if fmt != "table":
        raise ValueError(f"unknown report format {fmt!r}")
    o = report.overall
    since = f" since {report.since:%Y-%m-%d %H:%M} UTC" if report.since else ""
    lines = [
        f"Transcription metrics{since}",
        f"files {o['files']} (success {o['files_success']}, failed {o['files_failed']}, quarantined "
        f"{o['files_quarantined']}, skipped {o['files_skipped']}, running {o['files_running']}), "
        f"audio {o['audio_hours']:.2f} h, stage wall time {o['wall_hours']:.2f} h"
        + (f", end to end {o['rtf_end_to_end']:.1f}x real time" if o["rtf_end_to_end"] else ""),
        f"stage attempts {o['stage_attempts']}, failed {o['stage_failures']}, retries {o['stage_retries']}, "
        f"GPU OOM retries {o['oom_retries']}, CPU fallbacks {o['cpu_fallbacks']}",
        "",
    ]
    if len(report.stages):
        lines.append(report.stages.to_string(index=False, na_rep="-"))
        lines.append("(rtf: audio seconds per wall second; p05 = slowest 5 %)")
    else:
        lines.append("no stage attempts recorded")
    return "\n".join(lines) + "\n"


def plot(report: Report, path: str | Path) -> Path:
    """PNG: real-time factor per stage over time (left) and stage share of wall time (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 2]})
    attempts = report.attempts
    stages = list(report.stages["stage"]) if len(report.stages) else []
    colours = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(stages)}
    if len(attempts) and attempts["rtf"].notna().any():
        for stage in stages:
            g = attempts[(attempts["stage"] == stage) & attempts["rtf"].notna()].sort_values("start")
            ok = g[g["status"] == "success"]
            if len(ok):
                left.plot(ok["start"], ok["rtf"], marker="o", ms=4, lw=1.2, label=stage, color=colours[stage])
            failed = g[g["status"] == "failed"]
            if len(failed):
                left.scatter(failed["start"], failed["rtf"], marker="x", s=50, color="red", zorder=3)
        left.set_yscale("log")
        left.legend(loc="best", fontsize=8)
        left.xaxis.set_major_formatter(mdates.ConciseDateFormatter(left.xaxis.get_major_locator()))
    else:
        left.text(0.5, 0.5, "no timed stages", ha="center", va="center", transform=left.transAxes)
    left.set_title("Real-time factor per stage (x real time, log scale)")
    left.set_ylabel("audio seconds / wall second")
    left.grid(True, which="both", alpha=0.3)

    share = report.stages.dropna(subset=["wall_share_pct"]) if len(report.stages) else report.stages
    if len(share):
        bars = right.barh(share["stage"], share["wall_share_pct"], color=[colours[s] for s in share["stage"]])
        right.bar_label(bars, labels=[f"{p:.1f} % ({t:,.0f} s)" for p, t in
                                      zip(share["wall_share_pct"], share["seconds_total"])], fontsize=8, padding=3)
        right.invert_yaxis()
        right.set_xlim(0, min(100.0, float(share["wall_share_pct"].max()) * 1.35))
    else:
        right.text(0.5, 0.5, "no stage time", ha="center", va="center", transform=right.transAxes)
    right.set_title("Stage share of wall time")
    right.set_xlabel("% of stage wall time")
    o = report.overall
    since = f" since {report.since:%Y-%m-%d %H:%M} UTC" if report.since else ""
    fig.suptitle(f"SecureTranscribe{since}: {o['files']} file(s), {o['audio_hours']:.2f} h audio, "
                 f"{o['files_failed'] + o['files_quarantined']} failed or quarantined, "
                 f"GPU OOM retries {o['oom_retries']}, task retries {o['stage_retries']} (x: failed try)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(url: str | None, since: str | None = None, fmt: str = "table", plot_path: str | Path | None = None) -> str:
    """The ``report`` command: returns the rendered text; writes the plot when asked."""
    store = MetricsStore(url)
    try:
        store.upgrade()
        report = build(store, parse_since(since) if since else None)
        if plot_path:
            plot(report, plot_path)
        return render(report, fmt)
    finally:
        store.close()
