"""Speed benchmark: the library pipeline on a long meeting vs bare faster-whisper, same file, same run.

    python benchmarks/speed.py [--minutes 20 | --audio FILE] [--models tiny.en,base] [--repeats 2]
                               [--only transcription,pipeline,diarization] [--json OUT]

By default the 20-minute meeting is built with ``../shared/corpus/make_long.py`` into a temporary folder
(never into the repository). Every measurement runs in its own subprocess (clean peak RSS, no model
cache shared between runs); models are loaded before the clock starts (load time reported apart).
Runs are interleaved (ours, bare, ours, bare …) so machine load hits both alike; the best of the
repeats is reported, with every value in the JSON.

Measured (``KIND``):

- ``ours``: the library's transcription: decode, chunk plan (VAD once), chunked batched transcription.
- ``pipeline``: ``ours`` + whole-file diarization + merge, i.e. :func:`tasks.transcribe_file`.
- ``bare-batched``: ``faster_whisper.BatchedInferencePipeline(model).transcribe(vad_filter=True,
  batch_size=8, word_timestamps=True)`` — what ``ours`` reproduces chunk by chunk.
- ``bare-plain``: ``WhisperModel.transcribe(vad_filter=True, word_timestamps=True)``, for reference.
- ``diarize``: decode + diarization alone (per-step times, DER against the file's RTTM).
- ``cli`` (part ``cli``): the ``securetranscribe transcribe`` command, a fresh process with its imports and
  model loading, all nine formats — the whole run a user waits for — against bare batched just before it.

``--through-dag`` runs ``benchmarks/through_dag.py`` instead (the file through the real Airflow DAG).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import ROOT, default_corpus, machine, parse_params, peak_rss_mb, write_json

KINDS = ("ours", "bare-batched", "bare-plain", "pipeline", "diarize")


# -- workers (one per subprocess) ----------------------------------------------------------------------
def worker(kind: str, audio_path: Path, model: str, params: list[str]) -> dict[str, Any]:
    """Run one measurement in this process and return its numbers."""
    from tasks.settings import Settings

    settings = Settings.from_env(model=model)
    t_start = time.perf_counter()
    if kind in ("ours", "pipeline"):
        return _ours(audio_path, settings.replace(diarize=kind == "pipeline"), params)
    if kind.startswith("bare"):
        return _bare(audio_path, settings, batched=kind == "bare-batched")
    if kind == "diarize":
        return _diarize(audio_path, settings, params)
    raise SystemExit(f"unknown worker kind {kind} ({time.perf_counter() - t_start})")


def _ours(audio_path: Path, settings: Any, params: list[str]) -> dict[str, Any]:
    from tasks.devices import cpu_threads, whisper_compute_type, whisper_device
    from tasks.diarization.pipeline import load_pipeline
    from tasks.pipeline import transcribe_file
    from tasks.transcription import load_model, resolve_model

    t0 = time.perf_counter()
    device = whisper_device(settings.device)
    load_model(resolve_model(settings.model, settings.models_dir), device,
               whisper_compute_type(device, settings.compute_type), cpu_threads(settings.cpu_threads))
    if settings.diarize:
        from tasks.devices import torch_device

        load_pipeline(str(settings.models_dir), None, torch_device(settings.diarization_device),
                      parse_params(params))
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    transcript = transcribe_file(audio_path, settings)
    wall = time.perf_counter() - t0
    out = {"wall_s": wall, "load_s": load_s, "stages": transcript.timings, "duration": transcript.duration,
           "text": transcript.text, "speakers": len(transcript.speakers)}
    if settings.diarize:
        out["diarization_steps"] = transcript.diarization.get("timings", {})
    return out


def _bare(audio_path: Path, settings: Any, batched: bool) -> dict[str, Any]:
    from faster_whisper import BatchedInferencePipeline, WhisperModel, decode_audio

    from tasks.devices import cpu_threads, whisper_compute_type, whisper_device
    from tasks.transcription import resolve_model

    device = whisper_device(settings.device)
    t0 = time.perf_counter()
    model = WhisperModel(resolve_model(settings.model, settings.models_dir), device=device,
                         compute_type=whisper_compute_type(device, settings.compute_type),
                         cpu_threads=cpu_threads(settings.cpu_threads), local_files_only=True)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    audio = decode_audio(str(audio_path), sampling_rate=16000)
    decode_s = time.perf_counter() - t0
    if batched:
        segments, info = BatchedInferencePipeline(model).transcribe(
            audio, vad_filter=True, batch_size=settings.batch_size, word_timestamps=True)
    else:
        segments, info = model.transcribe(audio, vad_filter=True, word_timestamps=True)
    text = " ".join(s.text.strip() for s in segments)  # the generator does the work
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "load_s": load_s, "stages": {"decode": decode_s, "transcribe": wall - decode_s},
            "duration": info.duration, "text": text}


def _diarize(audio_path: Path, settings: Any, params: list[str]) -> dict[str, Any]:
    from tasks.audio import decode
    from tasks.devices import torch_device
    from tasks.diarization import diarize
    from tasks.diarization.pipeline import load_pipeline
    from tasks.evaluation import diarization_scores, read_rttm

    diar_params = parse_params(params)
    t0 = time.perf_counter()
    load_pipeline(str(settings.models_dir), None, torch_device(settings.diarization_device), diar_params)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    audio = decode(audio_path)
    decode_s = time.perf_counter() - t0
    result = diarize(audio, settings, params=diar_params)
    wall = time.perf_counter() - t0
    out = {"wall_s": wall, "load_s": load_s, "stages": {"decode": decode_s, "diarize": wall - decode_s},
           "diarization_steps": result.timings, "duration": len(audio) / 16000, "speakers": len(result.speakers)}
    rttm = audio_path.with_suffix(".rttm")
    if rttm.is_file():
        out["der"] = {f"{c:g}": diarization_scores(read_rttm(rttm), result.turns, collar=c)["der"] for c in (0.0, 0.25)}
    return out


def run_worker(kind: str, audio: Path, model: str, params: list[str]) -> dict[str, Any]:
    """One measurement in a fresh interpreter; adds peak RSS, CPU time and the load around it."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--audio", str(audio), "--models", model]
    for p in params:
        cmd += ["--param", p]
    proc, _, usage = _child(cmd, f"{kind} {model}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result.update(kind=kind, model=model, **usage)
    result["rtf_x"] = result["duration"] / result["wall_s"]
    return result


def _child(cmd: list[str], what: str) -> tuple[subprocess.CompletedProcess, float, dict[str, Any]]:
    """Run ``cmd`` (warnings off); raise with its stderr if it fails. Returns it, its wall time, and its CPU
    seconds with the load average before and after."""
    load_before = os.getloadavg()[0]
    before, t0 = os.times(), time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    wall, after = time.perf_counter() - t0, os.times()
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{proc.stderr[-3000:]}")
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return proc, wall, {"cpu_s": round(cpu, 1), "load_before": round(load_before, 2),
                        "load_after": round(os.getloadavg()[0], 2)}


def run_cli(audio: Path, model: str) -> dict[str, Any]:
    """``securetranscribe transcribe`` as a user runs it: a fresh process, imports and model loading, the
    default formats (all nine) into a temporary folder. Its own stage times come from the transcript JSON."""
    cli = Path(sys.executable).parent / "securetranscribe"
    with tempfile.TemporaryDirectory(prefix="speed-cli-") as out:
        _, wall, usage = _child([str(cli), "transcribe", str(audio), "--model", model, "--out", out], "the CLI")
        transcript = json.loads(next(Path(out).rglob(f"{audio.stem}.json")).read_text(encoding="utf-8"))
        written = sorted(p.suffix for p in Path(out).rglob(f"{audio.stem}.*"))
    duration = float(transcript.get("duration") or 0.0)
    return {"kind": "cli", "model": model, "wall_s": wall, "rtf_x": duration / wall, "duration": duration,
            "stages": transcript.get("timings", {}), "formats": written, "load_s": 0.0,
            "peak_rss_mb": round(peak_rss_mb(children=True)), **usage}


# -- the DAG mode ---------------------------------------------------------------------------------------
def run_through_dag(minutes: float, model: str, json_out: Path) -> int:
    """End to end through the Airflow DAG: runs ``benchmarks/through_dag.py`` in its own process.

    It starts its own embedded Airflow and measures bare faster-whisper in the same session, so its ratios
    stand on their own; it writes its own JSON (``json_out``) rather than rows of the interleaved table.
    """
    script = Path(__file__).resolve().parent / "through_dag.py"
    if not script.is_file():
        raise SystemExit("--through-dag needs benchmarks/through_dag.py")
    cmd = [sys.executable, str(script), "--minutes", f"{minutes:g}", "--model", model, "--json", str(json_out)]
    return subprocess.run(cmd, check=False).returncode


# -- driver ---------------------------------------------------------------------------------------------
def build_long_meeting(minutes: float) -> Path:
    """The corpus's long meeting (with RTTM) in a temporary folder, reused across runs."""
    out = Path(tempfile.gettempdir()) / f"securetranscribe-bench-{minutes:g}min"
    wav = out / "long_meeting.wav"
    if not (wav.is_file() and wav.with_suffix(".rttm").is_file()):
        script = default_corpus() / "make_long.py"
        subprocess.run([sys.executable, str(script), str(out), "--minutes", str(minutes)], check=True,
                       capture_output=True)
    return wav


def _variant(spec: str) -> tuple[str, list[str]]:
    """``name:key=value,key=value`` -> (name, ["key=value", …])."""
    name, _, pairs = spec.partition(":")
    return name, [p for p in pairs.split(",") if p]


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return min(runs, key=lambda r: r["wall_s"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audio", type=Path, help="audio file (default: the corpus's long meeting)")
    parser.add_argument("--minutes", type=float, default=20.0, help="length of the built meeting (default 20)")
    parser.add_argument("--models", default="tiny.en,base", help="Whisper models (default tiny.en,base)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats of ours/bare (default 2)")
    parser.add_argument("--plain-repeats", type=int, default=1, help="repeats of bare-plain (default 1; 0 skips)")
    parser.add_argument("--only", default="transcription,pipeline,diarization",
                        help="parts: transcription (ours vs bare), pipeline (with diarization), diarization, "
                             "diarize-vs-bare (bare batched faster-whisper then each --variant, per repeat), "
                             "cli (bare batched, then `securetranscribe transcribe` with all formats, per repeat)")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="DiarizationParams override (repeatable)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE[,KEY=VALUE]",
                        help="part 'diarize-vs-bare': a named set of DiarizationParams overrides, diarized in "
                             "each repeat right after bare batched faster-whisper (repeatable; default: defaults)")
    parser.add_argument("--through-dag", action="store_true",
                        help="end to end through the Airflow DAG (runs benchmarks/through_dag.py)")
    parser.add_argument("--json", type=Path, default=ROOT / "artifacts" / "speed.json")
    parser.add_argument("--worker", choices=KINDS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        result = worker(args.worker, args.audio, args.models, args.param)
        result["peak_rss_mb"] = round(peak_rss_mb())
        result.pop("text", None) if args.worker == "pipeline" else None
        print(json.dumps(result, ensure_ascii=False))
        return 0

    if args.through_dag:
        return run_through_dag(args.minutes, args.models.split(",")[0], args.json.with_name("through_dag.json"))
    audio = args.audio.resolve() if args.audio else build_long_meeting(args.minutes)
    parts = set(args.only.split(","))
    started = machine()
    runs: list[dict[str, Any]] = []

    def measure(kind: str, model: str) -> dict[str, Any]:
        r = run_worker(kind, audio, model, args.param)
        print(f"  {kind:13s} {model:8s} {r['wall_s']:7.1f} s  {r['rtf_x']:5.1f}x  rss {r['peak_rss_mb']} MB  "
              f"load {r['load_before']}->{r['load_after']}", file=sys.stderr, flush=True)
        runs.append(r)
        return r

    for model in args.models.split(","):
        if "transcription" in parts:
            for i in range(max(args.repeats, args.plain_repeats)):
                if i < args.repeats:
                    measure("ours", model)
                    measure("bare-batched", model)
                if i < args.plain_repeats:
                    measure("bare-plain", model)
        if "pipeline" in parts:
            for _ in range(args.repeats):
                measure("pipeline", model)
    if "diarization" in parts:
        for _ in range(args.repeats):
            measure("diarize", args.models.split(",")[0])
    if "cli" in parts:  # the whole CLI run (fresh process, all exports) right after bare batched, per repeat
        model = args.models.split(",")[0]
        for _ in range(args.repeats):
            measure("bare-batched", model)
            r = run_cli(audio, model)
            print(f"  cli           {model:8s} {r['wall_s']:7.1f} s  {r['rtf_x']:5.1f}x  formats {r['formats']}  "
                  f"stages {r['stages']}", file=sys.stderr, flush=True)
            runs.append(r)
    if "diarize-vs-bare" in parts:  # diarization over bare batched faster-whisper, same run, interleaved
        model = args.models.split(",")[0]
        variants = [_variant(v) for v in args.variant] or [("default", [])]
        for _ in range(args.repeats):
            measure("bare-batched", model)
            for name, params in variants:
                r = run_worker("diarize", audio, model, params)
                r.update(kind=f"diarize:{name}", params=params)
                print(f"  {r['kind']:13s} {model:8s} {r['wall_s']:7.1f} s  {r['rtf_x']:5.1f}x  "
                      f"rss {r['peak_rss_mb']} MB  load {r['load_before']}->{r['load_after']}  "
                      f"steps {r['diarization_steps']}  DER {r.get('der')}", file=sys.stderr, flush=True)
                runs.append(r)

    summary = summarise(runs)
    print_table(summary, audio)
    for r in runs:
        r.pop("text", None)
    write_json(args.json, {"command": " ".join(["benchmarks/speed.py", *(argv if argv is not None else sys.argv[1:])]),
                           "audio": str(audio), "machine": started, "load_average_end": machine()["load_average"],
                           "summary": summary, "runs": runs})
    print(f"\nJSON: {args.json}")
    return 0


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Best run of each (kind, model), with its ratio to bare batched faster-whisper of the same model."""
    from tasks.evaluation import wer

    out = []
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["model"], r["kind"]), []).append(r)
    for (model, kind), rs in groups.items():
        best = _best(rs)
        row = {"model": model, "kind": kind, "wall_s": round(best["wall_s"], 1), "rtf_x": round(best["rtf_x"], 2),
               "all_wall_s": [round(r["wall_s"], 1) for r in rs], "stages": best["stages"],
               "peak_rss_mb": max(r["peak_rss_mb"] for r in rs), "load_s": round(best["load_s"], 1),
               "cpu_s": best["cpu_s"], "load_before": [r["load_before"] for r in rs]}
        for key in ("diarization_steps", "der", "speakers"):
            if key in best:
                row[key] = best[key]
        bare = groups.get((model, "bare-batched"))
        if bare and (kind in ("ours", "pipeline", "bare-plain", "cli") or kind.startswith("diarize:")):
            row["vs_bare_batched"] = round(best["wall_s"] / _best(bare)["wall_s"], 2)
            pairs = [a["wall_s"] / b["wall_s"] for a, b in zip(rs, bare)]
            row["vs_bare_batched_per_repeat"] = [round(p, 2) for p in pairs]
            if "der" in best:
                row["der_all"] = [r.get("der") for r in rs]
            if "text" in best and "text" in bare[0]:
                row["wer_vs_bare_batched"] = round(wer(bare[0]["text"], best["text"]), 4)
        out.append(row)
    return out


def print_table(summary: list[dict[str, Any]], audio: Path) -> None:
    print(f"\n{audio.name}")
    head = f"{'model':8s} {'kind':13s} {'wall s':>7s} {'x RT':>6s} {'vs bare':>8s} {'RSS MB':>7s}  stages (s)"
    print(head)
    print("-" * 100)
    for r in summary:
        stages = " ".join(f"{k} {v:.1f}" for k, v in r["stages"].items())
        if "diarization_steps" in r:
            stages += " | " + " ".join(f"{k} {v:.1f}" for k, v in r["diarization_steps"].items())
        ratio = f"{r['vs_bare_batched']:.2f}" if "vs_bare_batched" in r else "-"
        print(f"{r['model']:8s} {r['kind']:13s} {r['wall_s']:7.1f} {r['rtf_x']:6.1f} {ratio:>8s} "
              f"{r['peak_rss_mb']:7d}  {stages}")


if __name__ == "__main__":
    raise SystemExit(main())
