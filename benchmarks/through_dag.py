"""The 20-minute file end to end through the real Airflow DAG, next to bare faster-whisper, in one session.

    .venv/bin/python benchmarks/through_dag.py [--minutes 20] [--audio FILE] [--model base]
                                               [--formats json,txt|all] [--json out.json]

1. Model loading cost in fresh processes (what each Airflow task try pays): interpreter start, imports,
   model load, for the Whisper models and the diarization pipeline.
2. Bare faster-whisper as a user's script would run it, in a fresh process: load the model, decode, run
   ``BatchedInferencePipeline(vad_filter=True, batch_size=8, word_timestamps=True)``.
3. The same file dropped into the inbox of the real embedded Airflow (supervisor, SQLite,
   LocalExecutor): two runs, transcription only (the part comparable to bare faster-whisper) and the
   full pipeline with diarization; per-task wall time from Airflow, per-stage rows from the metrics
   database (real-time factor, peak RSS).
Orchestration overhead = (probe + plan + transcribe task durations, each a fresh process that imports and
loads its model) / bare faster-whisper wall time; also the span from the probe's start to the last
transcribe task's end (adds the scheduler's hand-over between tasks).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from common import ROOT, airflow_harness, default_corpus

CORPUS = default_corpus()

LOAD_WHISPER = """
import time, sys
t0 = time.perf_counter()
from tasks.transcription import load_model, resolve_model
from tasks.settings import Settings
t1 = time.perf_counter()
s = Settings.from_env()
load_model(resolve_model(sys.argv[1], s.models_dir), "cpu", "int8", 0)
t2 = time.perf_counter()
print(f"{t1 - t0:.3f} {t2 - t1:.3f}")
"""
LOAD_DIARIZATION = """
import time
t0 = time.perf_counter()
import torch
from tasks.diarization.pipeline import DEFAULT_PARAMS, load_pipeline
from tasks.settings import Settings
t1 = time.perf_counter()
s = Settings.from_env()
load_pipeline(str(s.models_dir), None, "cpu", DEFAULT_PARAMS)
t2 = time.perf_counter()
print(f"{t1 - t0:.3f} {t2 - t1:.3f}")
"""
BARE = """
import sys, time
t0 = time.perf_counter()
from faster_whisper import BatchedInferencePipeline, WhisperModel, decode_audio
from tasks.transcription import resolve_model
from tasks.settings import Settings
model = WhisperModel(resolve_model(sys.argv[2], Settings.from_env().models_dir), device="cpu", compute_type="int8")
audio = decode_audio(sys.argv[1])
segments, info = BatchedInferencePipeline(model).transcribe(audio, vad_filter=True, batch_size=8,
                                                            word_timestamps=True)
words = sum(len(s.words) for s in segments)
print(f"{time.perf_counter() - t0:.3f} {words}")
"""


def fresh(code: str, *args: str) -> list[float]:
    """Run ``code`` in a new interpreter (as an Airflow task try would) and return its printed numbers."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    return [wall, *map(float, out.stdout.split())]


def model_loading(models: list[str]) -> dict[str, Any]:
    rows = {}
    for name in models:
        wall, imports, load = fresh(LOAD_WHISPER, name)
        rows[f"whisper {name}"] = {"process_s": round(wall, 2), "imports_s": round(imports, 2),
                                   "load_s": round(load, 2)}
    wall, imports, load = fresh(LOAD_DIARIZATION)
    rows["diarization (segmentation-3.0 + CAM++)"] = {"process_s": round(wall, 2), "imports_s": round(imports, 2),
                                                       "load_s": round(load, 2)}
    return rows


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def through_dag(af: Any, audio: Path, name: str, conf: dict[str, Any]) -> dict[str, Any]:
    """Trigger one run for ``audio`` (copied, never moved), wait, and collect task and stage figures."""
    from tasks.metrics import MetricsStore

    run_id = f"manual__bench-{name}"
    af.trigger("securetranscribe_process", {"path": str(audio), **conf}, run_id=run_id)
    deadline = time.monotonic() + 3 * 3600
    while True:
        run = af.api("GET", f"/dags/securetranscribe_process/dagRuns/{run_id}")
        if run["state"] in ("success", "failed"):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(run_id)
        time.sleep(5)
    tasks: dict[str, float] = {}  # a mapped task: the sum over its instances (they share one gpu slot)
    spans: dict[str, list[datetime]] = {}  # first start and last end of each task (mapped or not)
    for ti in af.task_instances("securetranscribe_process", run_id):
        if ti["start_date"] and ti["end_date"]:
            start, end = _ts(ti["start_date"]), _ts(ti["end_date"])
            key = ti["task_id"]
            tasks[key] = round(tasks.get(key, 0.0) + (end - start).total_seconds(), 2)
            span = spans.setdefault(key, [start, end])
            span[0], span[1] = min(span[0], start), max(span[1], end)
            if ti["map_index"] >= 0:
                tasks[f"{key}_instances"] = tasks.get(f"{key}_instances", 0) + 1
    record = MetricsStore(f"sqlite:///{af.settings_home / 'metrics.db'}").file(run_id)
    stages = {s.stage: {"seconds": round(s.seconds, 2), "rtf": round(s.rtf, 2) if s.rtf else None,
                        "peak_rss_mb": s.peak_rss_mb} for s in record.last_tries().values()}
    wall = (_ts(run["end_date"]) - _ts(run["start_date"])).total_seconds()
    probe_to_transcribed = (spans["transcribe"][1] - spans["probe"][0]).total_seconds() if "transcribe" in spans \
        and "probe" in spans else None
    return {"state": run["state"], "run_wall_s": round(wall, 2), "tasks_s": tasks, "stages": stages,
            "probe_start_to_last_transcribe_end_s": probe_to_transcribed}


def main() -> int:
    running_airflow = airflow_harness().running_airflow

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--model", default="base")
    parser.add_argument("--audio", type=Path, help="this file instead of a meeting built by make_long.py")
    parser.add_argument("--formats", default="json,txt",
                        help="export formats of the full run ('all': the default of a run, every format)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="st-bench-"))
    if args.audio:
        audio = args.audio.resolve()
    else:
        subprocess.run([sys.executable, str(CORPUS / "make_long.py"), str(tmp), "--minutes", str(args.minutes)],
                       check=True, capture_output=True)
        audio = tmp / "long_meeting.wav"
    import wave

    with wave.open(str(audio)) as w:
        duration = w.getnframes() / w.getframerate()
    report: dict[str, Any] = {"file": str(audio) if args.audio else f"make_long.py --minutes {args.minutes:g}",
                              "duration_s": round(duration, 2), "model": args.model,
                              "date": time.strftime("%Y-%m-%d"), "machine": "2 cores, 24 GiB, no GPU"}
    print("model loading in fresh processes …", flush=True)
    report["model_loading"] = model_loading(["tiny.en", "base"])
    print(json.dumps(report["model_loading"], indent=2), flush=True)

    print("bare faster-whisper (fresh process: load, decode, batched transcribe) …", flush=True)
    bare_wall, _, words = fresh(BARE, str(audio), args.model)
    report["bare_faster_whisper"] = {"wall_s": round(bare_wall, 2), "rtf": round(duration / bare_wall, 2),
                                     "words": int(words)}
    print(report["bare_faster_whisper"], flush=True)

    (tmp / "airflow").mkdir()
    with running_airflow(tmp / "airflow", SECURETRANSCRIBE_MODEL=args.model) as af:
        for name, conf in (("transcription", {"diarize": False, "formats": ["json"]}),
                           ("full", {} if args.formats == "all" else {"formats": args.formats.split(",")})):
            print(f"through the DAG: {name} …", flush=True)
            report[f"dag_{name}"] = through_dag(af, audio, name, conf)
            print(json.dumps(report[f"dag_{name}"], indent=2), flush=True)
    t = report["dag_transcription"]["tasks_s"]
    ours = t["probe"] + t["plan"] + t["transcribe"]
    span = report["dag_transcription"]["probe_start_to_last_transcribe_end_s"]
    report["orchestration"] = {
        "probe_plan_transcribe_tasks_s": round(ours, 2),
        "transcribe_tasks_s": t["transcribe"],
        "transcribe_task_instances": t.get("transcribe_instances", 1),
        "probe_start_to_last_transcribe_end_s": round(span, 2) if span else None,
        "ratio_tasks_to_bare": round(ours / bare_wall, 3),
        "ratio_span_to_bare": round(span / bare_wall, 3) if span else None,
        "ratio_transcribe_tasks_to_bare": round(t["transcribe"] / bare_wall, 3),
        "ratio_full_run_to_bare": round(report["dag_full"]["run_wall_s"] / bare_wall, 3),
    }
    print(json.dumps(report["orchestration"], indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
