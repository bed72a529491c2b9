"""Two files dropped together into a real `make run`: wall time with 1 vs N heavy-task slots on the CPU.

    .venv/bin/python benchmarks/pool_overlap.py [--slots 1 2] [--preload off on] [--files ami/dev00.flac …]
        [--model base] [--stable-s 5] [--recorded-earlier | --drop copy] [--repeats 3] [--timeline]
        [--idle-cpu 30] [--json artifacts/pool_overlap.json]

For each slot count the embedded Airflow (``tests/airflow_harness``) starts on a fresh data root with
``SECURETRANSCRIBE_CPU_HEAVY_TASKS=<slots>`` (CPU threads: cores ÷ slots), two corpus files are dropped into
the inbox at once, and the time from the drop until both processing runs finished is measured, with each
heavy task's own duration (from the Airflow API) and how long transcribe/diarize tasks ran side by side.
The JSON (and ``--timeline`` on screen) has every task of the inbox and processing runs: queued, started and
ended, in seconds after the drop — where a short file's time goes. ``--idle-cpu S`` first samples, for S
seconds, the CPU time of every process of the idle deployment (what an idle ``make run`` costs; set
``AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME`` in the environment to compare loop sleeps).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from common import airflow_harness, default_corpus, machine, write_json

PROCESS = "securetranscribe_process"
INBOX = "securetranscribe_inbox"
HEAVY = ("transcribe", "diarize")


def _t(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def overlap(spans: list[tuple[float, float]]) -> float:
    """Seconds during which at least two of the spans ran at once."""
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    running, since, total = 0, 0.0, 0.0
    for t, step in edges:
        if running >= 2:
            total += t - since
        running += step
        since = t
    return total


def measure(slots: int, files: list[Path], model: str, preload: bool = True, stable_s: float = 1.0,
            recorded_earlier: bool = False, drop: str = "rename", idle_cpu_s: float = 0.0) -> dict[str, Any]:
    harness = airflow_harness()
    with tempfile.TemporaryDirectory(prefix="pool-overlap-") as tmp, harness.running_airflow(
            Path(tmp), SECURETRANSCRIBE_MODEL=model, SECURETRANSCRIBE_CPU_HEAVY_TASKS=str(slots),
            SECURETRANSCRIBE_PRELOAD_LIBRARIES=str(preload).lower(),
            SECURETRANSCRIBE_FORMATS="txt,json", SECURETRANSCRIBE_INBOX_STABLE_S=f"{stable_s:g}") as af:
        idle_inbox(af, harness)  # "dropped into a running, idle make run": the inbox sensor is already waiting
        idle_cpu = idle_cpu_percent(af.proc.pid, idle_cpu_s) if idle_cpu_s > 0 else None
        staging, inbox = Path(tmp) / "staging", af.settings_home / "inbox"
        staging.mkdir()
        copy = shutil.copy2 if recorded_earlier else shutil.copyfile  # mtime kept (a recording), or now
        if drop == "copy":  # copied straight into the inbox, as `cp` does: the clock starts with the copy
            t0 = time.time()
            for f in files:
                copy(f, inbox / f.name)
        else:
            for f in files:
                copy(f, staging / f.name)
            t0 = time.time()
            for f in files:  # a rename into the inbox: all appear at once, complete
                (staging / f.name).rename(inbox / f.name)
        runs = af.wait_for_runs(PROCESS, count=len(files), timeout=3600)
        wall = max(_t(r["end_date"]) for r in runs) - t0
        tasks, spans = [], []
        timeline = [step for dag_id in (INBOX, PROCESS) for r in af.runs(dag_id)
                     for step in _timeline(af, dag_id, r, t0)]
        for r in runs:
            for ti in af.task_instances(PROCESS, r["dag_run_id"]):
                if ti["task_id"] in HEAVY and ti["start_date"] and ti["end_date"]:
                    s, e = _t(ti["start_date"]), _t(ti["end_date"])
                    spans.append((s, e))
                    tasks.append({"run": r["dag_run_id"], "task": ti["task_id"], "seconds": round(e - s, 1),
                                  "start": round(s - t0, 1)})
        return {"slots": slots, "preload_libraries": preload, "stable_s": stable_s,
                "recorded_earlier": recorded_earlier, "drop": drop, "idle_cpu_percent_of_a_core": idle_cpu,
                "scheduler_idle_sleep_s": os.environ.get("AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME", "default"),
                "states": sorted(r["state"] for r in runs),
                "wall_s": round(wall, 1),
                "heavy_side_by_side_s": round(overlap(spans), 1), "tasks": sorted(tasks, key=lambda x: x["start"]),
                "timeline": sorted(timeline, key=lambda x: (x["start"] is None, x["start"] or 0))}


def idle_inbox(af: Any, harness: Any) -> None:
    """Wait until the inbox run's sensor is deferred and its trigger runs in the triggerer (its log says it
    watches the inbox): files dropped before that are first seen at the trigger's first look."""
    def deferred() -> bool:
        return any(ti["task_id"] == "wait_for_files" and ti["state"] == "deferred"
                   for r in af.runs(INBOX) for ti in af.task_instances(INBOX, r["dag_run_id"]))

    def watching() -> bool:
        logs = (af.home / "logs" / f"dag_id={INBOX}").glob("run_id=*/task_id=wait_for_files/*.trigger.*")
        return any("inbox: watching" in log.read_text(errors="replace") for log in logs)

    harness.wait_until(deferred, 300, 0.5, "the inbox sensor to wait for files")
    harness.wait_until(watching, 120, 0.2, "the inbox trigger to watch the inbox")


def _tree_cpu_s(root: int) -> float:
    """CPU seconds (user + system) used so far by ``root`` and every process below it."""
    stats = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(pid)] = (int(fields[1]), int(fields[11]) + int(fields[12]))  # ppid, utime + stime
    below, found = {root}, True
    while found:
        found = False
        for pid, (ppid, _) in stats.items():
            if ppid in below and pid not in below:
                below.add(pid)
                found = True
    return sum(stats[pid][1] for pid in below if pid in stats) / os.sysconf("SC_CLK_TCK")


def idle_cpu_percent(root: int, seconds: float) -> float:
    """Percent of one core the deployment's processes use over ``seconds`` while idle."""
    c0, t0 = _tree_cpu_s(root), time.monotonic()
    time.sleep(seconds)  # a measurement interval, not synchronisation
    return round(100 * (_tree_cpu_s(root) - c0) / (time.monotonic() - t0), 1)


def _timeline(af: Any, dag_id: str, run: dict, t0: float) -> list[dict[str, Any]]:
    """Every task of a run: when it was queued, started and ended, in seconds after the drop."""
    def rel(stamp: str | None) -> float | None:
        return None if not stamp else round(_t(stamp) - t0, 2)

    return [{"dag": dag_id, "run": run["dag_run_id"], "task": ti["task_id"], "map_index": ti.get("map_index", -1),
             "queued": rel(ti.get("queued_when")), "start": rel(ti["start_date"]), "end": rel(ti["end_date"])}
            for ti in af.task_instances(dag_id, run["dag_run_id"])]


def print_timeline(steps: list[dict[str, Any]]) -> None:
    """One line per task: queued → start → end (seconds after the drop), and its start-up wait."""
    for x in steps:
        wait = "" if x["queued"] is None or x["start"] is None else f"  (waited {x['start'] - x['queued']:.1f} s)"
        label = x["task"] + ("" if x["map_index"] in (-1, None) else f"[{x['map_index']}]")
        print(f"  {x['dag'][17:]:8} {label:28} queued {x['queued']}  start {x['start']}  end {x['end']}{wait}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--model", default="base")
    parser.add_argument("--files", nargs="+", default=["ami/dev00.flac", "ami/trn04.flac"])
    parser.add_argument("--json", type=Path, default=Path("artifacts/pool_overlap.json"))
    parser.add_argument("--preload", nargs="+", choices=("on", "off"), default=["on"],
                        help="Settings.preload_libraries: the scheduler imports the heavy libraries once (on) or "
                        "each task imports them (off); both: one after the other")
    parser.add_argument("--stable-s", type=float, default=1.0,
                        help="SECURETRANSCRIBE_INBOX_STABLE_S of the deployment (default 1; the product's: 5)")
    parser.add_argument("--recorded-earlier", action="store_true",
                        help="drop the files with their own (old) mtime, as a finished recording moved into the "
                        "inbox; default: fresh copies, mtime now")
    parser.add_argument("--drop", choices=("rename", "copy"), default="rename",
                        help="how files enter the inbox: renamed in from a staging folder on the same disk "
                        "(default), or copied straight into it (cp)")
    parser.add_argument("--repeats", type=int, default=1, help="measure each setting this many times")
    parser.add_argument("--idle-cpu", type=float, default=0.0, metavar="S",
                        help="before each drop, sample the idle deployment's CPU use for S seconds")
    parser.add_argument("--timeline", action="store_true", help="print every task's queued/start/end times")
    args = parser.parse_args()
    files = [default_corpus() / f for f in args.files]
    results = []
    for slots, preload, _ in ((n, p, r) for n in args.slots for p in args.preload for r in range(args.repeats)):
        results.append(measure(slots, files, args.model, preload == "on", args.stable_s, args.recorded_earlier,
                               args.drop, args.idle_cpu))
        idle = results[-1]["idle_cpu_percent_of_a_core"]
        print(f"slots={slots} preload={preload}: {results[-1]['wall_s']} s wall, heavy tasks side by side "
              f"{results[-1]['heavy_side_by_side_s']} s, runs {results[-1]['states']}"
              + ("" if idle is None else f", idle deployment {idle} % of a core"), flush=True)
        if args.timeline:
            print_timeline(results[-1]["timeline"])
    write_json(args.json, {"machine": machine(), "model": args.model, "files": args.files, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
