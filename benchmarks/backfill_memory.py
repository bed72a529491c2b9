"""Memory over a backfill: does a worker's RSS grow from file to file?

    .venv/bin/python benchmarks/backfill_memory.py library [--files 100] [--model tiny.en] [--no-diarize]
    .venv/bin/python benchmarks/backfill_memory.py airflow [--files 40] [--model tiny.en] [--no-diarize]

``library``: N short corpus files (cycled) through ``tasks.pipeline.transcribe_file`` in ONE process, the
resident set size (RSS) taken after each file — the models are loaded once and reused, so after the first
files the curve must stay flat.

``airflow``: the real embedded Airflow (``tests/airflow_harness``, LocalExecutor), an archive partition of
N files, one ``securetranscribe_archive`` backfill. Every Airflow process's RSS is sampled once a second:
the long-lived processes (scheduler with its LocalExecutor workers, triggerer, dag-processor, api-server)
and each task process (a new one per task: its peak is what a task costs).

Writes ``<out>/<mode>.csv``, ``<out>/<mode>.json`` (summary) and ``<out>/<mode>.png``; prints the summary.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.error
from pathlib import Path
from typing import Any

from common import ROOT, airflow_harness, default_corpus

CORPUS = default_corpus()
SHORT_FILES = ("speech/jfk.flac", "speech/stereo_diarization.wav", "speech/hotwords.mp3", "ami/dev00.flac",
               "ami/dev01.flac", "ami/trn01.flac", "ami/trn03.flac", "ami/trn04.flac", "ami/trn05.flac")
MB = 1024 * 1024


def corpus_files(n: int) -> list[Path]:
    """``n`` short corpus files, cycling through :data:`SHORT_FILES`."""
    files = [CORPUS / f for f in SHORT_FILES]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise SystemExit(f"corpus files missing: {missing} (set SECURETRANSCRIBE_CORPUS)")
    return [files[i % len(files)] for i in range(n)]


def slope_mb_per_file(ys: list[float]) -> float:
    """Least-squares slope of ``ys`` against their index."""
    n = len(ys)
    if n < 2:
        return 0.0
    mx, my = (n - 1) / 2, sum(ys) / n
    return sum((i - mx) * (y - my) for i, y in enumerate(ys)) / sum((i - mx) ** 2 for i in range(n))


def plot(path: Path, series: dict[str, tuple[list[float], list[float]]], xlabel: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, label=label, marker="." if len(xs) < 150 else None)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("RSS (MiB)")
    ax.set_title(title)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- library: one process, N files ------------------------------------------------------------------
def summarize_library(rss: list[float]) -> dict[str, Any]:
    """RSS at a few points, and the trend over the second half (after every file kind was seen a few times)."""
    n = len(rss)
    half = rss[n // 2:]
    return {
        "files": n, "rss_after_first_mb": rss[0], "rss_after_10_mb": rss[min(9, n - 1)],
        "rss_after_half_mb": rss[n // 2 - 1] if n > 1 else rss[0], "rss_after_last_mb": rss[-1],
        "rss_max_mb": max(rss), "rss_second_half_min_mb": min(half), "rss_second_half_max_mb": max(half),
        "slope_second_half_mb_per_file": round(slope_mb_per_file(half), 3),
    }


def run_library(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    import psutil

    from tasks.pipeline import transcribe_file
    from tasks.settings import Settings

    proc = psutil.Process()
    settings = Settings.from_env(model=args.model, diarize=not args.no_diarize, cpu_threads=args.threads or None)
    rows = []
    start_rss = proc.memory_info().rss / MB
    t_start = time.perf_counter()
    for i, path in enumerate(corpus_files(args.files), 1):
        t0 = time.perf_counter()
        transcript = transcribe_file(path, settings)
        rss = proc.memory_info().rss / MB
        rows.append({"file": i, "name": path.name, "audio_s": round(transcript.duration, 1),
                     "seconds": round(time.perf_counter() - t0, 2), "rss_mb": round(rss, 1)})
        print(f"{i:4d} {path.name:28s} {rows[-1]['seconds']:6.2f} s  RSS {rss:7.1f} MiB", flush=True)
        del transcript
    summary = {"mode": "library", "model": settings.model, "diarize": settings.diarize,
               "rss_before_mb": round(start_rss, 1), **summarize_library([r["rss_mb"] for r in rows]),
               "wall_s": round(time.perf_counter() - t_start, 1), "cpu_count": os.cpu_count()}
    rss = [r["rss_mb"] for r in rows]
    with open(out / "library.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    plot(out / "library.png", {"RSS after each file": ([r["file"] for r in rows], rss)}, "files processed",
         f"transcribe_file x {len(rows)} in one process ({settings.model}, diarize={settings.diarize})")
    return summary


# -- airflow: the real scheduler, one backfill of N files ---------------------------------------------
def classify(p: Any) -> str:
    """A name for an Airflow process from its title (Airflow 3.3 sets them with setproctitle)."""
    try:
        cmd = " ".join(p.cmdline())
    except Exception:
        return "?"
    if "airflow worker -- LocalExecutor" in cmd:
        return "executor worker"
    if "airflow worker -- " in cmd:
        return "task"  # the task process: "airflow worker -- <task instance id>"
    for key, name in (("scheduler", "scheduler"), ("triggerer", "triggerer"), ("dag-processor", "dag-processor"),
                      ("dag_processor", "dag-processor"), ("api-server", "api-server"), ("api_server", "api-server"),
                      ("serve-logs", "log server")):
        if key in cmd:
            return name
    return "?"


class Sampler(threading.Thread):
    """Samples the RSS of every process under ``root_pid`` once a second."""

    def __init__(self, root_pid: int, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.root_pid, self.interval = root_pid, interval
        self.samples: list[dict[str, Any]] = []  # t, pid, kind, rss_mb
        self.stop = threading.Event()

    def run(self) -> None:
        import psutil

        t0 = time.monotonic()
        root = psutil.Process(self.root_pid)
        while not self.stop.is_set():
            now = round(time.monotonic() - t0, 1)
            try:
                procs = root.children(recursive=True)
            except psutil.NoSuchProcess:
                return
            for p in procs:
                try:
                    rss = round(p.memory_info().rss / MB, 1)
                    # classified at every sample: a forked process keeps its parent's title for a moment
                    self.samples.append({"t": now, "pid": p.pid, "kind": classify(p), "rss_mb": rss})
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            self.stop.wait(self.interval)


def run_airflow(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    harness = airflow_harness()
    running_airflow, wait_until = harness.running_airflow, harness.wait_until

    tmp = Path(tempfile.mkdtemp(prefix="st-backfill-memory-"))
    root = tmp / "recordings"
    folder = root / "2024" / "03" / "01"
    folder.mkdir(parents=True)
    for i, src in enumerate(corpus_files(args.files)):
        # distinct content per file (the ledger would skip a repeat): the corpus file plus a few bytes of
        # padding after the audio stream are not possible for every container, so re-encode to WAV
        _distinct_wav(src, folder / f"{i:03d}-{src.stem}.wav", i)
    env = {"SECURETRANSCRIBE_MODEL": args.model, "SECURETRANSCRIBE_DIARIZE": "0" if args.no_diarize else "1",
           "SECURETRANSCRIBE_BACKFILL_ROOT": str(root), "SECURETRANSCRIBE_METRICS_URL": "none"}
    if args.threads:
        env["SECURETRANSCRIBE_CPU_THREADS"] = str(args.threads)
    t_start = time.perf_counter()
    with running_airflow(tmp, **env) as af:
        def parsed() -> bool:
            try:
                return bool(af.api("GET", "/dags/securetranscribe_archive"))
            except Exception:
                return False

        wait_until(parsed, 300, 2.0, "the archive DAG")
        sampler = Sampler(af.proc.pid)
        sampler.start()
        body = {"dag_id": "securetranscribe_archive", "from_date": "2024-03-01T00:00:00Z",
                "to_date": "2024-03-01T00:00:00Z"}
        for attempt in range(10):  # the embedded SQLite database may be busy (503): nothing was created then
            try:
                af.api("POST", "/backfills", body)
                break
            except urllib.error.HTTPError as exc:
                if exc.code != 503 or attempt == 9:
                    raise
                if af.api("GET", "/backfills")["backfills"]:
                    break  # it was created after all

        def done() -> bool:
            runs = af.runs("securetranscribe_process_batch")
            return len(runs) >= args.files and all(r["state"] in ("success", "failed") for r in runs)

        timed_out = False
        try:
            wait_until(done, args.timeout, 5.0, f"{args.files} processing runs")
        except TimeoutError:
            timed_out = True  # report what was measured so far
        states = [r["state"] for r in af.runs("securetranscribe_process_batch")]
        sampler.stop.set()
        sampler.join()
    shutil.rmtree(tmp, ignore_errors=True)
    samples = sampler.samples
    write_airflow_csv(out / "airflow.csv", samples)
    return {"mode": "airflow", "files": args.files, "model": args.model, "diarize": not args.no_diarize,
            "runs": {s: states.count(s) for s in set(states)}, "timed_out": timed_out,
            "wall_s": round(time.perf_counter() - t_start, 1), **summarize_airflow(samples, out, args.files)}


def write_airflow_csv(path: Path, samples: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["t", "pid", "kind", "rss_mb"])
        w.writeheader()
        w.writerows(samples)


def summarize_airflow(samples: list[dict[str, Any]], out: Path, files: int) -> dict[str, Any]:
    """Long-lived processes (alive over 80 % of the run): RSS over time; the others: peak RSS per process."""
    by_pid: dict[int, list[dict[str, Any]]] = {}
    for s in samples:
        by_pid.setdefault(int(s["pid"]), []).append({**s, "t": float(s["t"]), "rss_mb": float(s["rss_mb"])})
    span = max(s["t"] for ss in by_pid.values() for s in ss)

    def kind(ss: list[dict[str, Any]]) -> str:
        kinds = [s["kind"] for s in ss if s["kind"] != "?"]
        return max(set(kinds), key=kinds.count) if kinds else "?"

    lasting = {pid: ss for pid, ss in by_pid.items() if ss[-1]["t"] - ss[0]["t"] > 0.8 * span}
    short: dict[str, list[float]] = {}
    for pid, ss in by_pid.items():
        if pid not in lasting:
            k = "dag-processor (parse)" if kind(ss) == "dag-processor" else "task"
            short.setdefault(k, []).append(max(s["rss_mb"] for s in ss))
    long_lived = {}
    series = {}
    for pid, ss in sorted(lasting.items(), key=lambda kv: kind(kv[1])):
        rss = [s["rss_mb"] for s in ss]
        long_lived[f"{kind(ss)} {pid}"] = {"first_mb": rss[0], "at_25pct_mb": rss[len(rss) // 4],
                                           "at_50pct_mb": rss[len(rss) // 2], "at_75pct_mb": rss[3 * len(rss) // 4],
                                           "last_mb": rss[-1], "max_mb": max(rss)}
        series[f"{kind(ss)} {pid}"] = ([s["t"] for s in ss], rss)
    plot(out / "airflow.png", series, "seconds since the backfill was created",
         f"Long-lived Airflow processes during a {files}-file backfill")
    peaks = {}
    for k, ps in short.items():
        ps.sort()
        peaks[k] = {"processes": len(ps), "median_mb": ps[len(ps) // 2], "p90_mb": ps[int(0.9 * (len(ps) - 1))],
                    "max_mb": ps[-1]}
    return {"span_s": span, "long_lived": long_lived, "short_lived_peak_rss": peaks}


def _distinct_wav(src: Path, dest: Path, i: int) -> None:
    """``src`` decoded to 16 kHz mono WAV, with ``i`` samples of silence prepended (distinct content)."""
    import wave

    import numpy as np

    from tasks.audio import decode

    audio = np.concatenate([np.zeros(i + 1, dtype=np.float32), decode(src)])
    with wave.open(str(dest), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("library", "airflow", "summarize"),
                        help="summarize: the summary of an earlier airflow run from its CSV (--csv)")
    parser.add_argument("--csv", type=Path, help="summarize: an airflow.csv written earlier")
    parser.add_argument("--files", type=int, default=None, help="files to process (library 100, airflow 40)")
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--no-diarize", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="CPU inference threads (0: one per core)")
    parser.add_argument("--timeout", type=float, default=5400.0, help="airflow: seconds to wait for the runs")
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "backfill_memory")
    args = parser.parse_args(argv)
    args.files = args.files or (100 if args.mode == "library" else 40)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.mode == "summarize":
        with open(args.csv, newline="") as fh:
            summary = {"mode": "airflow", **summarize_airflow(list(csv.DictReader(fh)), args.out, args.files)}
        args.mode = "airflow-summary"
    else:
        summary = run_library(args, args.out) if args.mode == "library" else run_airflow(args, args.out)
    (args.out / f"{args.mode}.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
