"""GPU check (``make gpu-check``): the 20-minute meeting on CUDA, end to end, in one command (< 8 minutes).

    .venv/bin/python benchmarks/gpu_check.py [--out artifacts] [--minutes 20] [--model base] [--skip oom,dag]
    .venv/bin/python benchmarks/gpu_check.py --smoke     # the CPU smoke run (what CI runs; also without --smoke
                                                         # on a machine without an NVIDIA GPU)

Writes ``<out>/gpu_check.json`` and a table (stdout and ``<out>/gpu_check.md``). Each part runs in a fresh
subprocess (its own CUDA context, peak memory and model cache); models load before the clock starts.

With a usable GPU (CTranslate2 and torch both see CUDA), on the meeting built by ``make_long.py`` (as
``benchmarks/speed.py`` builds it):

1. ``library``: :func:`tasks.pipeline.transcribe_file` with ``device="cuda"``, compute type float16,
   diarization on CUDA and all nine export formats (``out_dir``); stage times from ``transcript.timings``.
2. ``bare``: bare ``BatchedInferencePipeline`` (faster-whisper) on the same file and GPU, as ``speed.py``.
3. ``diarize``: decode + :func:`tasks.diarization.diarize` alone on CUDA (per-step times, DER vs the RTTM).
4. ``oom_transcribe`` and ``oom_diarize``: a real CUDA out-of-memory that the shrink policy
   (:mod:`tasks.oom`) survives, on the first ``--oom-minutes`` of the meeting, through ``transcribe_file``;
   the attempts come from ``transcript.attempts``. The two engines need two triggers:

   - diarization (torch): ``torch.cuda.set_per_process_memory_fraction`` caps torch's caching allocator
     at what the loaded pipeline holds plus a budget below the first try's need (default: 60 % of the
     working memory part 3 measured; segmentation's memory scales with its batch), so the batch-32 try
     raises ``OutOfMemoryError`` and a halved batch (or, at worst, the CPU) finishes.
   - transcription (CTranslate2): CTranslate2 allocates with its own CUDA allocator, outside torch's, so
     the fraction does not limit it. A torch tensor allocated after the Whisper model is loaded fills the
     GPU but for ``--whisper-headroom-mib`` (default 384 MiB): base, float16, batch 8 × beam 5 needs
     about 1 GiB (encoder attention 8 × 8 heads × 1500² ≈ 290 MiB, cross-attention keys/values of 40
     hypotheses ≈ 700 MiB), batch 1 about 150 MiB; so the first try fails and a halved batch fits. Were
     the estimate wrong, the policy goes on (chunk length, then the CPU) and still finishes; the table
     says on which device each try ran. A GPU filled by another process is a real cause of this OOM.
5. ``dag``: the same file through the embedded Airflow (``tests/airflow_harness``, pool ``gpu``) with
   ``SECURETRANSCRIBE_DEVICE=cuda``, all nine formats; task durations (``benchmarks/through_dag.py``).

Peak GPU memory: ``torch.cuda.max_memory_allocated`` in the torch parts, and the device's memory in use
sampled by ``nvidia-smi`` every 100 ms over the whole check, attributed to each part, stage and Airflow
task by its start and end (CTranslate2's allocations are visible only there; a 100 ms sample can miss a
brief peak).

Before the parts, a preflight process computes on CUDA with torch and with the Whisper model (one second
of silence): CTranslate2 4.8 loads cuBLAS for CUDA 12 (``libcublas.so.12``) only at its first matrix
product, and torch 2.11's wheels bring CUDA 13 libraries, so a host without CUDA 12 cuBLAS is refused
there with that explanation rather than failing in every part.

Without an NVIDIA GPU it says so and runs the CPU smoke run instead: a 30 s corpus excerpt through
``transcribe_file`` with tiny.en, diarization and all nine exports (``"gpu": false`` in the JSON); exit 0
when that passes. Exit 1: a check failed (the JSON and table are still written). Exit 2: a GPU that the
libraries cannot use (the preflight), or a missing model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import ROOT, default_corpus, machine, peak_rss_mb, write_json

PARTS = ("library", "bare", "diarize", "oom", "dag")
SMOKE_AUDIO = Path("ami") / "trn04.flac"
SMOKE_MODEL = "tiny.en"
TIME_LIMIT_S = 8 * 60
MIB = 2**20


# -- GPU detection --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GpuProbe:
    """What this machine has: GPUs listed by ``nvidia-smi -L``, and whether both engines can use CUDA."""

    nvidia_smi: tuple[str, ...]
    ctranslate2_devices: int
    torch_cuda: bool

    @property
    def usable(self) -> bool:
        return self.ctranslate2_devices > 0 and self.torch_cuda

    @property
    def present(self) -> bool:
        return bool(self.nvidia_smi) or self.ctranslate2_devices > 0 or self.torch_cuda

    def describe(self) -> str:
        return (f"nvidia-smi: {', '.join(self.nvidia_smi) or 'no GPU'}; CTranslate2 CUDA devices: "
                f"{self.ctranslate2_devices}; torch.cuda: {'available' if self.torch_cuda else 'unavailable'}")


def probe_gpu() -> GpuProbe:
    listed: tuple[str, ...] = ()
    if shutil.which("nvidia-smi"):
        proc = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            listed = tuple(line.strip() for line in proc.stdout.splitlines() if line.startswith("GPU "))
    import torch

    from tasks.devices import cuda_device_count

    return GpuProbe(listed, cuda_device_count(), bool(torch.cuda.is_available()))


# -- device memory sampling (nvidia-smi) -----------------------------------------------------------------
class MemorySampler:
    """``nvidia-smi`` memory.used of one GPU every ``interval_ms``, timestamped with ``time.time()``."""

    def __init__(self, index: int = 0, interval_ms: int = 100, enabled: bool = True) -> None:
        self.enabled = enabled
        self.samples: list[tuple[float, float]] = []
        self.interval_ms = interval_ms
        self._cmd = ["nvidia-smi", f"--id={index}", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                     f"--loop-ms={interval_ms}"]
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> MemorySampler:
        if self.enabled and shutil.which("nvidia-smi"):
            self._proc = subprocess.Popen(self._cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self._thread = threading.Thread(target=self._read, daemon=True)
            self._thread.start()
            time.sleep(0.5)  # the idle baseline
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                self.samples.append((time.time(), float(line.strip())))
            except ValueError:
                continue

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def idle_mib(self) -> float | None:
        return self.samples[0][1] if self.samples else None

    def peak_mib(self, start: float, end: float) -> float | None:
        """Highest sample between ``start`` and ``end`` (``time.time()``), None without samples there."""
        inside = [mib for t, mib in self.samples if start <= t <= end]
        return max(inside) if inside else None


# -- workers (each in a fresh subprocess) ----------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    """One measurement, passed to ``--worker`` as JSON."""

    kind: str  # preflight | library | bare | diarize | oom_transcribe | oom_diarize
    audio: str
    model: str
    device: str  # cuda | cpu
    out_dir: str = ""
    whisper_headroom_mib: float = 384.0
    diarization_budget_mib: float | None = None


def _settings(job: Job, **changes: Any) -> Any:
    from tasks.settings import ALL_FORMATS, Settings

    compute = "float16" if job.device == "cuda" else "auto"
    return Settings.from_env(model=job.model, device=job.device, compute_type=compute,
                             diarization_device=job.device, formats=ALL_FORMATS, **changes)


def _preload(settings: Any, diarization: bool) -> float:
    """Load the models the run will use (same cache keys as the library), return seconds."""
    from tasks.devices import cpu_threads, torch_device, whisper_compute_type, whisper_device
    from tasks.transcription import load_model, resolve_model

    t0 = time.perf_counter()
    device = whisper_device(settings.device)
    load_model(resolve_model(settings.model, settings.models_dir), device,
               whisper_compute_type(device, settings.compute_type), cpu_threads(settings.cpu_threads))
    if diarization:
        from tasks.diarization import DEFAULT_PARAMS
        from tasks.diarization.pipeline import load_pipeline

        load_pipeline(str(settings.models_dir), None, torch_device(settings.diarization_device), DEFAULT_PARAMS)
    return time.perf_counter() - t0


def _torch_peaks() -> dict[str, float]:
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return {}
    return {"torch_max_allocated_mib": round(torch.cuda.max_memory_allocated() / MIB, 1),
            "torch_max_reserved_mib": round(torch.cuda.max_memory_reserved() / MIB, 1)}


def _run_library(job: Job, settings: Any) -> dict[str, Any]:
    """``transcribe_file`` with every export; stage times, attempts, exports and stage intervals."""
    from tasks.pipeline import transcribe_file

    exports: dict[str, dict[str, Any]] = {}

    def on_export(fmt: str, files: list[str], error: Exception | None) -> None:
        paths = [Path(f) for f in files]
        exports[fmt] = {"files": [p.name for p in paths], "bytes": sum(p.stat().st_size for p in paths if p.is_file()),
                        "error": repr(error) if error else None}

    work = Path(tempfile.mkdtemp(prefix="st-gpu-check-"))
    try:
        started = time.time()
        t0 = time.perf_counter()
        transcript = transcribe_file(job.audio, settings, work_dir=work, out_dir=job.out_dir or None,
                                     on_export=on_export if job.out_dir else None)
        wall = time.perf_counter() - t0
        intervals = {}
        for p in work.rglob("timings/*.json"):
            seconds = json.loads(p.read_text())["seconds"]
            end = p.stat().st_mtime
            intervals[p.stem] = [end - seconds, end]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"wall_s": wall, "started": started, "stages": transcript.timings, "stage_intervals": intervals,
            "duration": transcript.duration, "speakers": len(transcript.speakers),
            "words": sum(len(s.words) for s in transcript.segments),
            "attempts": [dataclasses.asdict(a) for a in transcript.attempts],
            "diarization_steps": transcript.diarization.get("timings", {}), "exports": exports}


def worker(job: Job) -> dict[str, Any]:
    """Run one job in this process and return its numbers."""
    if job.kind == "preflight":
        return _preflight(job)
    if job.kind == "library":
        settings = _settings(job)
        load_s = _preload(settings, diarization=True)
        return {"load_s": load_s, **_run_library(job, settings), **_torch_peaks()}
    if job.kind == "bare":
        return _bare(job)
    if job.kind == "diarize":
        return _diarize(job)
    if job.kind == "oom_transcribe":
        return _oom_transcribe(job)
    if job.kind == "oom_diarize":
        return _oom_diarize(job)
    raise SystemExit(f"unknown job kind {job.kind}")


def _bare(job: Job) -> dict[str, Any]:
    from faster_whisper import BatchedInferencePipeline, WhisperModel, decode_audio

    from tasks.transcription import resolve_model

    settings = _settings(job)
    t0 = time.perf_counter()
    model = WhisperModel(resolve_model(settings.model, settings.models_dir), device=job.device,
                         compute_type=settings.compute_type, local_files_only=True)
    load_s = time.perf_counter() - t0
    started = time.time()
    t0 = time.perf_counter()
    audio = decode_audio(job.audio, sampling_rate=16000)
    segments, info = BatchedInferencePipeline(model).transcribe(audio, vad_filter=True, batch_size=settings.batch_size,
                                                                word_timestamps=True)
    words = sum(len(s.words or []) for s in segments)  # the generator does the work
    return {"wall_s": time.perf_counter() - t0, "started": started, "load_s": load_s, "duration": info.duration,
            "words": words}


def _diarize(job: Job) -> dict[str, Any]:
    import torch

    from tasks.audio import SAMPLE_RATE, decode
    from tasks.diarization import diarize
    from tasks.evaluation import diarization_scores, read_rttm

    settings = _settings(job)
    load_s = _preload(settings, diarization=True)
    loaded_reserved = torch.cuda.memory_reserved() / MIB if job.device == "cuda" else 0.0
    started = time.time()
    t0 = time.perf_counter()
    audio = decode(job.audio)
    result = diarize(audio, settings)
    out = {"wall_s": time.perf_counter() - t0, "started": started, "load_s": load_s,
           "duration": len(audio) / SAMPLE_RATE, "speakers": len(result.speakers),
           "diarization_steps": result.timings, "attempts": [dataclasses.asdict(a) for a in result.attempts],
           "torch_loaded_reserved_mib": round(loaded_reserved, 1), **_torch_peaks()}
    rttm = Path(job.audio).with_suffix(".rttm")
    if rttm.is_file():
        out["der"] = {f"{c:g}": diarization_scores(read_rttm(rttm), result.turns, collar=c)["der"] for c in (0.0, 0.25)}
    return out


def _warm_up(settings: Any) -> None:
    """One second of silence through the loaded model, so cuBLAS/cuDNN handles exist before the GPU fills."""
    import numpy as np

    from tasks.devices import cpu_threads, whisper_compute_type, whisper_device
    from tasks.transcription import load_model, resolve_model

    device = whisper_device(settings.device)
    model = load_model(resolve_model(settings.model, settings.models_dir), device,
                       whisper_compute_type(device, settings.compute_type), cpu_threads(settings.cpu_threads))
    segments, _ = model.transcribe(np.zeros(16000, np.float32), language="en", beam_size=1, vad_filter=False,
                                   without_timestamps=True)
    list(segments)


def _preflight(job: Job) -> dict[str, Any]:
    """Both engines really compute on CUDA: a torch tensor, and one second through the Whisper model."""
    import torch

    torch.ones(8, device="cuda").sum().item()
    settings = _settings(job)
    t0 = time.perf_counter()
    _preload(settings, diarization=False)
    _warm_up(settings)
    return {"wall_s": time.perf_counter() - t0, "duration": 1.0}


def _fill_gpu(headroom: int) -> tuple[Any, int]:
    """One torch tensor over all free GPU memory but ``headroom`` bytes (a little less if that fails)."""
    import torch

    for attempt in range(8):
        size = max(0, torch.cuda.mem_get_info()[0] - headroom - attempt * 256 * MIB)
        try:
            return torch.empty(size, dtype=torch.uint8, device="cuda"), size
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
    raise RuntimeError("could not allocate the tensor that fills the GPU")


def _oom_transcribe(job: Job) -> dict[str, Any]:
    """Transcription with the GPU filled but for ``whisper_headroom_mib`` (CTranslate2 ignores torch's cap)."""
    import torch

    settings = _settings(job, diarize=False)
    load_s = _preload(settings, diarization=False)
    _warm_up(settings)
    hog, hog_bytes = _fill_gpu(int(job.whisper_headroom_mib * MIB))
    left, total = torch.cuda.mem_get_info()
    out = _run_library(dataclasses.replace(job, out_dir=""), settings)
    del hog
    torch.cuda.empty_cache()
    return {**out, "load_s": load_s, "trigger": "torch tensor filling the GPU after the Whisper model loaded",
            "hog_mib": round(hog_bytes / MIB), "free_mib_left": round(left / MIB), "total_mib": round(total / MIB)}


def _oom_diarize(job: Job) -> dict[str, Any]:
    """The whole pipeline with torch capped at the loaded pipeline + ``diarization_budget_mib``."""
    import torch

    settings = _settings(job)
    load_s = _preload(settings, diarization=True)
    total = torch.cuda.get_device_properties(0).total_memory
    loaded = torch.cuda.memory_reserved()
    limit = loaded + int((job.diarization_budget_mib or 256.0) * MIB)
    torch.cuda.set_per_process_memory_fraction(min(1.0, limit / total), 0)
    torch.cuda.reset_peak_memory_stats()
    out = _run_library(dataclasses.replace(job, out_dir=""), settings)
    return {**out, "load_s": load_s, **_torch_peaks(),
            "trigger": "torch.cuda.set_per_process_memory_fraction", "fraction": round(limit / total, 5),
            "torch_limit_mib": round(limit / MIB), "torch_loaded_reserved_mib": round(loaded / MIB, 1)}


def run_job(job: Job, timeout: float = 2 * TIME_LIMIT_S) -> dict[str, Any]:
    """``job`` in a fresh interpreter; adds peak RSS and the wall time of the whole process."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(dataclasses.asdict(job))]
    begun = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if proc.returncode != 0:
        raise RuntimeError(f"{job.kind} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result.update(kind=job.kind, device=job.device, model=job.model, process_s=round(time.time() - begun, 2),
                  process_interval=[begun, time.time()])
    result["rtf_x"] = round(result["duration"] / result["wall_s"], 2) if result.get("wall_s") else None
    return result


# -- the Airflow part ------------------------------------------------------------------------------------
def run_dag(audio: Path, model: str, device: str, home: Path) -> dict[str, Any]:
    """The file through the embedded Airflow on ``device`` (every format); task durations and intervals."""
    import through_dag
    from common import airflow_harness

    from tasks.settings import ALL_FORMATS, env_name

    env = {env_name("model"): model, env_name("device"): device, env_name("diarization_device"): device,
           env_name("compute_type"): "float16" if device == "cuda" else "auto"}
    begun = time.time()
    with airflow_harness().running_airflow(home, **env) as af:
        started = time.time()
        report = through_dag.through_dag(af, audio, "gpu", {"formats": list(ALL_FORMATS)})
        intervals: dict[str, list[float]] = {}
        for ti in af.task_instances("securetranscribe_process", "manual__bench-gpu"):
            if ti["start_date"] and ti["end_date"]:
                s, e = through_dag._ts(ti["start_date"]).timestamp(), through_dag._ts(ti["end_date"]).timestamp()
                span = intervals.setdefault(ti["task_id"], [s, e])
                span[0], span[1] = min(span[0], s), max(span[1], e)
        try:
            report["gpu_pool_slots"] = af.api("GET", "/pools/gpu").get("slots")
        except Exception as exc:  # the figure is informative only
            report["gpu_pool_slots"] = f"unknown ({exc!r})"
    report.update(device=device, task_intervals=intervals, startup_s=round(started - begun, 1),
                  process_interval=[begun, time.time()])
    return report


# -- driver ----------------------------------------------------------------------------------------------
@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Report:
    gpu: bool
    mode: str
    command: str
    reason: str = ""
    machine: dict[str, Any] = field(default_factory=dict)
    audio: dict[str, Any] = field(default_factory=dict)
    parts: dict[str, dict[str, Any]] = field(default_factory=dict)
    gpu_memory_sampling: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    total_s: float = 0.0

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def build_meeting(minutes: float) -> Path:
    """The corpus's long meeting (with RTTM), built once by ``make_long.py`` into the temp folder."""
    from speed import build_long_meeting

    return build_long_meeting(minutes)


CUBLAS_HINT = ("CTranslate2 (faster-whisper) loads cuBLAS for CUDA 12 (libcublas.so.12) at its first matrix "
               "product, while torch 2.11 brings the CUDA 13 libraries only: install cuBLAS for CUDA 12 (the system's "
               "CUDA 12 toolkit, or `pip install nvidia-cublas-cu12` with its nvidia/cublas/lib folder on "
               "LD_LIBRARY_PATH).")


def preflight(model: str) -> str | None:
    """None when torch and CTranslate2 both compute on CUDA, else why not (in a fresh process)."""
    try:
        run_job(Job("preflight", "", model, "cuda"), timeout=300)
    except Exception as exc:
        text = str(exc).strip()
        reason = text.splitlines()[-1] if text else repr(exc)
        return f"{reason} {CUBLAS_HINT}" if "libcublas" in text else reason
    return None


def check_models(model: str, diarization: bool = True) -> None:
    """Raise ModelUnavailable naming the missing model (nothing is downloaded)."""
    from tasks import model_store
    from tasks.settings import Settings
    from tasks.transcription import resolve_model

    settings = Settings.from_env()
    resolve_model(model, settings.models_dir)
    if diarization and settings.diarization_pipeline is None:
        model_store.require(settings.models_dir, "segmentation-3.0")
        model_store.require(settings.models_dir, "campplus")


def export_check(part: dict[str, Any]) -> Check:
    from tasks.settings import ALL_FORMATS

    written = {f for f, e in part["exports"].items() if e["files"] and not e["error"] and e["bytes"] > 0}
    missing = [f for f in ALL_FORMATS if f not in written]
    return Check("all nine exports written", not missing,
                 f"{len(written)}/{len(ALL_FORMATS)}" + (f"; missing {missing}" if missing else ""))


def oom_check(part: dict[str, Any], stage: str) -> Check:
    tries = [a for a in part["attempts"] if a["stage"] == stage]
    first_failed = bool(tries) and tries[0]["outcome"] == "oom"
    finished = bool(tries) and tries[-1]["outcome"] == "ok"
    ooms = sum(a["outcome"] == "oom" for a in tries)
    detail = (f"{ooms} OOM tries, finished on {tries[-1]['device'] if tries else '-'}: "
              + " → ".join(f"{a['device']}/b{a['batch_size']}" + (f"/{a['chunk_s']:.0f}s" if a.get("chunk_s") else "")
                           + f" {a['outcome']}" for a in tries))
    return Check(f"{stage}: real CUDA OOM, shrank and finished", first_failed and finished, detail)


def _step(report: Report, name: str, run: Any) -> dict[str, Any] | None:
    """Run one part; a part that fails is recorded (error and a failed check) and the others still run."""
    print(f"  {name} …", file=sys.stderr, flush=True)
    try:
        part = run()
    except Exception as exc:
        text = f"{type(exc).__name__}: {str(exc).strip()}"
        report.parts[name] = {"error": text[-4000:]}
        print(f"  {name} FAILED: {text[-1500:]}", file=sys.stderr, flush=True)
        report.checks.append(Check(f"{name} ran", False, text.splitlines()[-1][:300] if text else repr(exc)))
        return None
    report.parts[name] = part
    return part


def _exports_folder(out: Path) -> Path:
    folder = out / "gpu_check_exports"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def smoke(args: argparse.Namespace, report: Report) -> None:
    """The CPU smoke run: a 30 s excerpt through the library with tiny.en, diarization, every export."""
    audio = default_corpus() / SMOKE_AUDIO
    report.audio = {"path": str(audio)}
    job = Job("library", str(audio), SMOKE_MODEL, "cpu", out_dir=str(_exports_folder(args.out)))
    part = _step(report, "library", lambda: run_job(job))
    if part is not None:
        report.audio["duration_s"] = round(part["duration"], 2)
        report.checks.append(Check("library on the CPU (tiny.en, diarization)", part["words"] > 0,
                                   f"{part['words']} words, {part['speakers']} speakers"))
        report.checks.append(export_check(part))


def gpu(args: argparse.Namespace, report: Report, sampler: MemorySampler) -> None:
    """Every GPU part not skipped, each in its own process, then the memory samples attributed to them."""
    skip = set(report.skipped)
    audio = build_meeting(args.minutes)
    with wave.open(str(audio)) as w:
        duration = w.getnframes() / w.getframerate()
    report.audio = {"path": str(audio), "built_by": f"make_long.py --minutes {args.minutes:g}",
                    "duration_s": round(duration, 2)}

    def job(kind: str, path: Path = audio, **extra: Any) -> Job:
        return Job(kind, str(path), args.model, args.device, **extra)

    if "library" not in skip:
        part = _step(report, "library", lambda: run_job(job("library", out_dir=str(_exports_folder(args.out)))))
        if part is not None:
            devices = {a["device"] for a in part["attempts"]}
            report.checks.append(Check(f"library end to end on {args.device}", devices == {args.device} and all(
                a["outcome"] == "ok" for a in part["attempts"]), f"attempts on {sorted(devices)}"))
            report.checks.append(export_check(part))
    if "bare" not in skip:
        _step(report, "bare", lambda: run_job(job("bare")))
    budget = args.diarization_budget_mib
    if "diarize" not in skip:
        part = _step(report, "diarize", lambda: run_job(job("diarize")))
        if budget is None and part is not None and "torch_max_reserved_mib" in part:
            budget = max(16.0, 0.6 * (part["torch_max_reserved_mib"] - part["torch_loaded_reserved_mib"]))
    if "oom" not in skip and args.device == "cuda":
        clip = build_meeting(args.oom_minutes)
        part = _step(report, "oom_transcribe", lambda: run_job(job("oom_transcribe", clip,
                                                                   whisper_headroom_mib=args.whisper_headroom_mib)))
        if part is not None:
            report.checks.append(oom_check(part, "transcribe"))
        part = _step(report, "oom_diarize", lambda: run_job(job("oom_diarize", clip, diarization_budget_mib=budget)))
        if part is not None:
            report.checks.append(oom_check(part, "diarize"))
    if "dag" not in skip:
        home = Path(tempfile.mkdtemp(prefix="st-gpu-check-airflow-"))
        try:
            part = _step(report, "dag", lambda: run_dag(audio, args.model, args.device, home))
        finally:
            shutil.rmtree(home, ignore_errors=True)
        if part is not None:
            exports = part["tasks_s"].get("export_instances", 0)
            report.checks.append(Check(f"through the DAG on {args.device}", part["state"] == "success" and exports == 9,
                                       f"run {part['state']}, {exports} export tasks, pool gpu slots "
                                       f"{part.get('gpu_pool_slots')}"))
    attribute_memory(report, sampler)


def attribute_memory(report: Report, sampler: MemorySampler) -> None:
    """Peak device memory (nvidia-smi samples) of each part, library stage and Airflow task."""
    if not sampler.samples:
        report.gpu_memory_sampling = {"samples": 0, "note": "no nvidia-smi samples"}
        return
    report.gpu_memory_sampling = {"idle_mib": sampler.idle_mib, "samples": len(sampler.samples),
                                  "interval_ms": sampler.interval_ms}
    for part in report.parts.values():
        if "process_interval" not in part:
            continue
        part["gpu_peak_mib"] = sampler.peak_mib(*part["process_interval"])
        for key, spans in (("stage_intervals", "stage_gpu_peak_mib"), ("task_intervals", "task_gpu_peak_mib")):
            if key in part:
                part[spans] = {name: sampler.peak_mib(s, e) for name, (s, e) in part[key].items()}


# -- the table -------------------------------------------------------------------------------------------
def _num(value: Any, fmt: str = "{:.1f}") -> str:
    return "–" if value is None else fmt.format(value)


def table(report: Report) -> str:
    """The report as Markdown: one row per part, the library's stages, the checks."""
    title = {"gpu": f"GPU: {report.machine.get('cuda')}", "cpu-smoke": "no GPU: CPU smoke run",
             "gpu-parts-on-cpu": "the GPU parts on the CPU (not GPU figures)"}[report.mode]
    lines = [f"# GPU check — {title}",
             "", f"`{report.command}` — {report.machine.get('date')}, commit {report.machine.get('commit')}, "
             f"{report.machine.get('cpu_count')} cores; audio {Path(report.audio.get('path', '')).name} "
             f"({_num(report.audio.get('duration_s'))} s); total {report.total_s:.0f} s", ""]
    if report.reason:
        lines += [f"**{report.reason}**", ""]
    lines += ["| part | device | wall s | × real time | load s | peak RSS MiB | peak GPU MiB device / torch | notes |",
              "|---|---|---|---|---|---|---|---|"]
    for name, part in report.parts.items():
        if "error" in part:
            lines.append(f"| {name} | – | – | – | – | – | – | FAILED: {part['error'].splitlines()[-1][:200]} |")
            continue
        if name == "dag":
            t, peaks = part.get("tasks_s", {}), part.get("task_gpu_peak_mib", {})
            tasks = ", ".join(f"{task} task {_num(t.get(task))} s (GPU {_num(peaks.get(task), '{:.0f}')} MiB)"
                              for task in ("transcribe", "diarize"))
            lines.append(f"| dag (Airflow, pool gpu: {part.get('gpu_pool_slots')} slot(s)) | {part['device']} | "
                         f"{part['run_wall_s']:.1f} | – | – | – | {_num(part.get('gpu_peak_mib'), '{:.0f}')} / – | "
                         f"{tasks}; {t.get('export_instances', 0)} export tasks {_num(t.get('export'))} s in all; "
                         f"Airflow start-up {part['startup_s']} s |")
            continue
        notes = []
        if name == "oom_transcribe":
            notes.append(f"GPU filled by a {part['hog_mib']} MiB tensor, {part['free_mib_left']} MiB left")
        if name == "oom_diarize":
            notes.append(f"torch capped at {part['torch_limit_mib']} MiB (fraction {part['fraction']})")
        if "der" in part:
            notes.append(f"DER {part['der']['0.25']:.3f} (collar 0.25)")
        if "speakers" in part:
            notes.append(f"{part['speakers']} speakers")
        if "words" in part:
            notes.append(f"{part['words']} words")
        if name == "bare" and "stages" in report.parts.get("library", {}):
            stages = report.parts["library"]["stages"]
            ours = sum(stages.get(k, 0.0) for k in ("probe", "plan", "transcribe"))
            notes.append(f"library's probe + plan + transcribe: {ours / part['wall_s']:.2f} × this")
        torch_peak = _num(part.get("torch_max_allocated_mib"), "{:.0f}")
        lines.append(f"| {name} | {part['device']} | {part['wall_s']:.1f} | {_num(part.get('rtf_x'))} | "
                     f"{_num(part.get('load_s'))} | {_num(part.get('peak_rss_mb'), '{:.0f}')} | "
                     f"{_num(part.get('gpu_peak_mib'), '{:.0f}')} / {torch_peak} | {'; '.join(notes)} |")
    library = report.parts.get("library", {})
    if "stages" in library:
        lines += ["", "| library stage | seconds | peak GPU MiB device / torch |", "|---|---|---|"]
        peaks = library.get("stage_gpu_peak_mib", {})
        torch_peak = library.get("torch_max_allocated_mib")  # torch runs on the GPU in diarization only
        for stage, seconds in library["stages"].items():
            mine = torch_peak if stage == "diarize" else None
            lines.append(f"| {stage} | {seconds:.2f} | {_num(peaks.get(stage), '{:.0f}')} / {_num(mine, '{:.0f}')} |")
        if library.get("diarization_steps"):
            lines.append("")
            lines.append("diarization steps (s): " + ", ".join(f"{k} {v:.1f}" for k, v in
                                                               library["diarization_steps"].items()))
    lines += ["", "| check | result | detail |", "|---|---|---|"]
    lines += [f"| {c.name} | {'ok' if c.ok else 'FAILED'} | {c.detail} |" for c in report.checks]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts", help="folder of gpu_check.json/.md")
    parser.add_argument("--smoke", action="store_true", help="the CPU smoke run even where a GPU is present")
    parser.add_argument("--minutes", type=float, default=20.0, help="length of the built meeting (default 20)")
    parser.add_argument("--model", default="base", help="Whisper model of the GPU parts (default base)")
    parser.add_argument("--skip", default="", help=f"comma-separated GPU parts to leave out: {','.join(PARTS)}")
    parser.add_argument("--oom-minutes", type=float, default=4.0, help="length of the OOM runs' meeting (default 4)")
    parser.add_argument("--whisper-headroom-mib", type=float, default=384.0,
                        help="GPU memory left free for the OOM transcription run (default 384)")
    parser.add_argument("--diarization-budget-mib", type=float, default=None,
                        help="torch memory over the loaded pipeline in the OOM diarization run (default: 60%% of "
                             "what the diarize part needed, else 256)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cpu: the GPU mode's parts (but the OOM ones) on the CPU, to check this script on a "
                             "machine without a GPU; not GPU figures")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        result = worker(Job(**json.loads(args.worker)))
        result["peak_rss_mb"] = round(peak_rss_mb())
        print(json.dumps(result, ensure_ascii=False, default=str))
        return 0

    t_start = time.perf_counter()
    args.out = args.out.resolve()
    command = " ".join(["benchmarks/gpu_check.py", *(argv if argv is not None else sys.argv[1:])])
    skipped = [p for p in args.skip.split(",") if p]
    unknown = sorted(set(skipped) - set(PARTS))
    if unknown:
        parser.error(f"unknown parts {unknown}; known: {','.join(PARTS)}")
    probe = probe_gpu()
    on_cpu = args.device == "cpu" and not args.smoke
    use_gpu = (probe.usable or on_cpu) and not args.smoke
    if probe.present and not probe.usable and not args.smoke and not on_cpu:
        print(f"gpu-check: an NVIDIA GPU is present but not usable by both engines ({probe.describe()}). Fix the "
              "CUDA installation (driver, CUDA/cuDNN libraries), or run with --smoke for the CPU run.", file=sys.stderr)
        return 2
    try:
        check_models(args.model if use_gpu else SMOKE_MODEL)
    except Exception as exc:  # ModelUnavailable: a clear reason, no traceback
        print(f"gpu-check: {'CUDA is available but ' if probe.usable and use_gpu else ''}a model is missing: {exc}",
              file=sys.stderr)
        return 2
    if use_gpu and not on_cpu and (failure := preflight(args.model)):
        print(f"gpu-check: CUDA is present ({probe.describe()}) but does not work: {failure}", file=sys.stderr)
        return 2

    if on_cpu:
        reason = "--device cpu: the GPU mode's parts ran on the CPU (not GPU figures)"
    elif args.smoke:
        reason = f"--smoke: CPU smoke run; GPU parts not run ({probe.describe()})."
    elif not use_gpu:
        reason = f"No usable NVIDIA GPU on this machine ({probe.describe()}): GPU figures not measured; CPU smoke " \
                 "run instead."
    else:
        reason = ""
    mode = "gpu-parts-on-cpu" if on_cpu else "gpu" if use_gpu else "cpu-smoke"
    report = Report(gpu=use_gpu and not on_cpu, mode=mode, command=command, reason=reason,
                    machine=machine(), skipped=skipped if use_gpu else [])
    print(f"gpu-check: {reason or 'GPU: ' + probe.describe()}", flush=True)
    if use_gpu:
        with MemorySampler(enabled=not on_cpu) as sampler:
            gpu(args, report, sampler)
        if not on_cpu:
            report.checks.append(Check("under 8 minutes", time.perf_counter() - t_start < TIME_LIMIT_S,
                                       f"{time.perf_counter() - t_start:.0f} s"))
    else:
        smoke(args, report)
    report.total_s = round(time.perf_counter() - t_start, 1)

    data = dataclasses.asdict(report)
    data["ok"] = report.ok
    write_json(args.out / "gpu_check.json", data)
    text = table(report)
    print("\n" + text)
    (args.out / "gpu_check.md").write_text(text, encoding="utf-8")
    print(f"JSON: {args.out / 'gpu_check.json'}\ntable: {args.out / 'gpu_check.md'}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
