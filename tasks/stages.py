"""The pipeline as one list of resumable stages over a run's work folder: :data:`STAGES`.

Both front ends execute these same functions: each Airflow task of the processing DAGs runs one stage
(``dags/securetranscribe_lib/processing.py``), and the CLI runs them one after another over a temporary
work folder (:func:`tasks.pipeline.transcribe_file`). Every stage reads its inputs from and writes its
outputs to the :class:`~tasks.workspace.Workspace` (heavy data stays on disk, only small dicts are
returned), is safe to run again after a crash, reports to :class:`~tasks.recording.StageHooks`, and
records why it failed. No Airflow import.

Stage functions take the run's folder, the base settings (environment, or the CLI's flags; the run's own
options from ``run.json`` are applied on top), the hooks, and the Airflow try number and process start.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import InputError
from .files import atomic_write_json, sha256_file
from .finalize import export_results, finalize_stage
from .ledger import Ledger
from .options import options_key, run_conf, run_settings
from .recording import ProgressLog, StageHooks, chunk_line, stage_timings, step_line
from .settings import Settings
from .workspace import RunInfo, Workspace, check_safe, claim, output_stem

log = logging.getLogger(__name__)

__all__ = ["STAGES", "STAGE_NAMES", "Stage", "claim_stage", "diarize_stage", "export_results", "export_stage",
           "finalize_stage", "merge_stage", "metrics_stage", "plan_stage", "probe_stage", "transcribe_stage"]


def settings_of(ws: Workspace, base: Settings | None = None) -> Settings:
    """The settings a run was claimed with (the same for every task and every retry)."""
    return run_settings(base or Settings.from_env(), ws.run_info().options)


def output_dir(outbox: Path, stem: str, sha256: str) -> Path:
    """``outbox/<stem>/``, or ``outbox/<stem>-<sha8>/`` when that name holds another file's outputs."""
    import json

    preferred = outbox / stem
    marker = preferred / ".source.json"
    if not preferred.exists():
        return preferred
    try:
        if json.loads(marker.read_text(encoding="utf-8")).get("sha256") == sha256:
            return preferred
    except (OSError, ValueError):
        pass
    return outbox / f"{stem}-{sha256[:8]}"


def _hooks(hooks: StageHooks | None, settings: Settings) -> StageHooks:
    return hooks if hooks is not None else StageHooks.for_settings(settings)


# -- the stages -------------------------------------------------------------------------------------
def claim_stage(run_id: str, path: str | Path, conf: dict[str, Any] | None = None, settings: Settings | None = None,
                *, hooks: StageHooks | None = None, try_number: int = 1, started_at: Any = None,
                work: Path | None = None, out_dir: Path | None = None, stem: str | None = None,
                take: bool = True) -> dict[str, Any]:
    """Take the file into the run's work folder, hash it, decide its outputs, detect duplicates.

    ``take=False`` (the CLI): the file is read where it is, never moved or copied, and the ledger of
    processed content is not consulted. ``work``/``out_dir`` default to the settings' folders; ``stem``
    names the output files (default: the file's own stem, shortened when very long).
    """
    conf = conf or {}
    settings = settings or Settings.from_env()
    hooks = _hooks(hooks, settings)
    ws = Workspace.for_run(work or settings.work, run_id).create()
    if ws.run_file.is_file():  # a retry after the claim already completed
        return ws.run_info().to_dict()
    with hooks.stage(ws, "claim", try_number, started_at):
        source = Path(path)
        if take:
            claimed = claim(source, ws, settings.inbox)
            atomic_write_json(ws.claim_file, {"run_id": run_id, "source": str(source), "input": str(claimed)})
            check_safe(claimed, ws.input_dir)
        else:
            claimed = source.absolute()
            if not claimed.is_file():
                raise InputError(f"no such file: {source}")
        options = run_conf(conf)
        effective = run_settings(settings, options)
        sha = sha256_file(claimed)
        if conf.get("sha256") and conf["sha256"] != sha:
            log.warning("%s changed after the inbox scan (sha256 %s -> %s)", claimed.name, conf["sha256"][:12],
                        sha[:12])
        key = options_key(effective)
        duplicate = None
        if take and not effective.reprocess:
            duplicate = Ledger(settings.home / "ledger").lookup(sha, key)
        stem = output_stem(stem or claimed.stem, sha)  # a given stem is cut to fit as well
        info = RunInfo(
            run_id=run_id, name=claimed.name, stem=stem, work=str(ws.root), input=str(claimed), source=str(source),
            sha256=sha, size=claimed.stat().st_size,
            out_dir=str(out_dir if out_dir is not None else output_dir(settings.outbox, stem, sha)),
            options_key=key, options=options, duplicate_of=duplicate,
            from_inbox=take and (ws.input_dir in source.parents or settings.inbox in source.parents),
        )
        atomic_write_json(ws.run_file, info.to_dict())
    hooks.file(ws, "skipped" if duplicate else "running", file_name=info.name, sha256=sha, model=effective.model,
               options_key=key)
    return info.to_dict()


def probe_stage(ws: Workspace, settings: Settings | None = None, *, hooks: StageHooks | None = None,
                try_number: int = 1, started_at: Any = None) -> dict[str, Any]:
    """Probe and decode once; later stages memory-map ``audio.npy``."""
    if ws.info_file.is_file() and ws.audio_file.is_file():
        return ws.read(ws.info_file)
    settings = settings_of(ws, settings)
    with _hooks(hooks, settings).stage(ws, "probe", try_number, started_at):
        return _decode_input(ws, settings)


def _decode_input(ws: Workspace, settings: Settings) -> dict[str, Any]:
    from .assemble import source_record
    from .audio import SAMPLE_RATE, decode, probe, save_waveform

    info = ws.run_info()
    original = Path(info.input)
    if not original.exists() and not original.is_symlink():
        raise InputError(f"the input {original.name} was removed from the run's work folder {ws.root}")
    meta = probe(original)
    audio = decode(original, max_duration_s=settings.max_duration_s)
    save_waveform(audio, ws.audio_file)
    record = {"duration": round(len(audio) / SAMPLE_RATE, 3), "probe": meta.to_dict(),
              "source": source_record(original, meta, info.sha256)}
    atomic_write_json(ws.info_file, record)
    return record


def load_audio(ws: Workspace, settings: Settings) -> Any:
    """The run's decoded audio; decoded again from the input if ``audio.npy`` went missing."""
    from .audio import load_waveform

    if not ws.audio_file.is_file():
        log.warning("%s is missing (removed during the run?): decoding the input again", ws.audio_file)
        _decode_input(ws, settings)
    return load_waveform(ws.audio_file)


def plan_stage(ws: Workspace, settings: Settings | None = None, *, hooks: StageHooks | None = None,
               try_number: int = 1, started_at: Any = None) -> dict[str, Any]:
    """VAD over the whole file and the chunk plan."""
    from .chunking import make_plan

    if ws.plan_file.is_file():
        plan = ws.read(ws.plan_file)
        return {"chunks": len(plan["spans"]), "target_s": plan["target_s"]}
    settings = settings_of(ws, settings)
    with _hooks(hooks, settings).stage(ws, "plan", try_number, started_at):
        plan = make_plan(load_audio(ws, settings), settings)
        atomic_write_json(ws.plan_file, plan.to_dict())
    return {"chunks": len(plan.spans), "target_s": plan.target_s, "speech_s": round(plan.speech_s, 1)}


def transcribe_stage(ws: Workspace, settings: Settings | None = None, *, hooks: StageHooks | None = None,
                     try_number: int = 1, started_at: Any = None) -> dict[str, Any]:
    """Transcribe chunk by chunk, resuming from the last checkpointed chunk; OOM shrinks as it goes.

    Progress (chunk i/N, seconds done/total) is logged every few seconds and kept in the run folder."""
    from .checkpoint import ChunkCheckpoint
    from .chunking import ChunkPlan
    from .transcription import transcribe_plan

    if ws.transcription_file.is_file():
        return _transcription_summary(ws.read(ws.transcription_file))
    settings = settings_of(ws, settings)
    hooks = _hooks(hooks, settings)
    ws.pid_file("transcribe").write_text(str(os.getpid()))
    with hooks.stage(ws, "transcribe", try_number, started_at) as rec, ProgressLog(ws, "transcribe") as shown:
        plan = ChunkPlan.from_dict(ws.read(ws.plan_file))
        checkpoint = ChunkCheckpoint(ws.chunks_dir)
        resume = checkpoint.resume()
        done = [len(resume.chunks)]
        shown.set(chunk_line(done[0], len(plan.spans), resume.chunks[-1].end if resume.chunks else 0.0,
                             plan.duration))

        def on_chunk(done_s: float, total_s: float, index: int) -> None:
            done[0] += 1
            shown.set(chunk_line(done[0], max(len(plan.spans), done[0] + (done_s < total_s)), done_s, total_s))
            if hooks.progress:
                hooks.progress(done_s, total_s, index)

        run = transcribe_plan(load_audio(ws, settings), plan, settings, resume=resume, on_event=checkpoint.record,
                              progress=on_chunk)
        rec.add_attempts(run.attempts[len(resume.attempts):])  # earlier tries recorded theirs
        redecoded = [r for c in run.chunks for r in c.redecoded]
        rec.update(detail={"chunks": len(run.chunks), "resumed_chunks": run.resumed_chunks,
                           "redecoded": len(redecoded), "redecoded_s": round(sum(r["end"] - r["start"]
                                                                                 for r in redecoded), 2),
                           "second_pass_s": round(sum(c.redecode_seconds for c in run.chunks), 2)})
        for attempt in run.attempts:
            attempt.error = attempt.error and attempt.error[:500]
        data = {
            "chunks": [c.to_dict() for c in run.chunks],
            "attempts": [asdict(a) for a in run.attempts],
            "state": run.state.to_dict() if run.state else None,
            "resumed_chunks": run.resumed_chunks,
            "try_number": try_number,
        }
        atomic_write_json(ws.transcription_file, data)
    return _transcription_summary(data)


def _transcription_summary(data: dict[str, Any]) -> dict[str, Any]:
    attempts = data["attempts"]
    return {
        "chunks": len(data["chunks"]),
        "resumed_chunks": data.get("resumed_chunks", 0),
        "oom_retries": sum(1 for a in attempts if a["outcome"] == "oom"),
        "cpu_fallback": bool(data["state"] and data["state"].get("cpu_fallback")),
        "device": data["state"]["device"] if data["state"] else None,
    }


def diarize_stage(ws: Workspace, settings: Settings | None = None, *, hooks: StageHooks | None = None,
                  try_number: int = 1, started_at: Any = None) -> dict[str, Any]:
    """Diarize the whole file (never chunk by chunk); skipped when off or when VAD found no speech.

    Progress (the pyannote step and its batches done) is logged every few seconds and kept in the run folder."""
    from .diarization import diarize

    if ws.diarization_file.is_file():
        data = ws.read(ws.diarization_file)
        return {"speakers": len(data.get("speakers", [])), "enabled": data.get("enabled", True)}
    settings = settings_of(ws, settings)
    with _hooks(hooks, settings).stage(ws, "diarize", try_number, started_at) as rec:
        speech = bool(ws.read(ws.plan_file).get("regions")) if ws.plan_file.is_file() else True
        if not settings.diarize or not speech:  # nothing to diarize in a file without speech
            data = {"enabled": settings.diarize, "turns": [], "exclusive": [], "speakers": [], "attempts": [],
                    "device": "none", "timings": {}, "params": {}, "skipped": None if speech else "no speech"}
        else:
            ws.pid_file("diarize").write_text(str(os.getpid()))
            with ProgressLog(ws, "diarize") as shown:
                shown.set("loading the pipeline")
                result = diarize(load_audio(ws, settings), settings,
                                 on_step=lambda step, completed=None, total=None:
                                 shown.set(step_line(step, completed, total)))
            data = {"enabled": True, **asdict(result)}
            rec.add_attempts(result.attempts)
            rec.update(detail={"speakers": len(result.speakers), "steps": result.timings,
                               "embeddings": result.embeddings, "moved_turns": result.moved_turns,
                               "split_turns": result.split_turns, "regrouped_turns": result.regrouped_turns,
                               "flicker_stretches": result.flicker_stretches})
        atomic_write_json(ws.diarization_file, data)
    return {"speakers": len(data["speakers"]), "enabled": data["enabled"]}


def merge_stage(ws: Workspace, settings: Settings | None = None, *, hooks: StageHooks | None = None,
                try_number: int = 1, started_at: Any = None) -> dict[str, Any]:
    """Assign words to speakers and write the canonical ``transcript.json``."""
    from .assemble import build_transcript
    from .diarization import Diarization
    from .oom import RunState
    from .result import Attempt, Turn
    from .transcription import ChunkResult, TranscriptionRun

    settings = settings_of(ws, settings)
    with _hooks(hooks, settings).stage(ws, "merge", try_number, started_at) as rec:
        tdata = ws.read(ws.transcription_file)
        run = TranscriptionRun(
            chunks=[ChunkResult.from_dict(c) for c in tdata["chunks"]],
            attempts=[Attempt(**a) for a in tdata["attempts"]],
            state=RunState.from_dict(tdata["state"]) if tdata["state"] else None,
            resumed_chunks=tdata.get("resumed_chunks", 0),
        )
        ddata = ws.read(ws.diarization_file)
        diarization = None
        if ddata.get("enabled", True):
            diarization = Diarization(
                turns=[Turn(**t) for t in ddata["turns"]], exclusive=[Turn(**t) for t in ddata["exclusive"]],
                speakers=ddata["speakers"], device=ddata["device"], timings=ddata.get("timings", {}),
                attempts=[Attempt(**a) for a in ddata.get("attempts", [])], params=ddata.get("params", {}),
            )
        info = ws.read(ws.info_file)
        transcript = build_transcript(
            duration=info["duration"], run=run, diarization=diarization, settings=settings, source=info["source"],
            timings=stage_timings(ws),
        )
        transcript.coverage = _coverage(ws, transcript, run, diarization)
        rec.update(detail={"coverage": {k: v for k, v in transcript.coverage.items()
                                        if k != "stretches_without_words"}})
        atomic_write_json(ws.transcript_file, transcript.to_dict())
        if settings.log_text:  # debug only: transcript text never reaches logs otherwise
            log.info("transcript of %s: %s", ws.run_id, transcript.text[:4000])
    return {"segments": len(transcript.segments), "speakers": transcript.speakers, "language": transcript.language,
            "duration": transcript.duration, "formats": list(settings.formats)}


def _coverage(ws: Workspace, transcript: Any, run: Any, diarization: Any) -> dict[str, Any]:
    """Speech left without words: against the diarization's turns, or the plan's VAD speech without one."""
    from .audio import SAMPLE_RATE
    from .coverage import coverage

    if diarization is not None:
        speech, source = [(t.start, t.end) for t in diarization.turns], "diarization"
    else:
        regions = ws.read(ws.plan_file).get("regions", []) if ws.plan_file.is_file() else []
        speech, source = [(s / SAMPLE_RATE, e / SAMPLE_RATE) for s, e in regions], "vad"
    redecoded = [r for c in run.chunks for r in c.redecoded]
    return coverage(speech, [(w.start, w.end) for w in transcript.words], redecoded, source=source)


def export_options(settings: Settings) -> Any:
    """The export choices of a run, from its settings."""
    from .exports import ExportOptions

    return ExportOptions(speaker_names=dict(settings.speaker_names), csv_bom=settings.csv_bom,
                         csv_formula_guard=settings.csv_formula_guard, include_dir=settings.include_dir,
                         fault_disk_full=settings.fault_disk_full)


def export_stage(ws: Workspace, fmt: str, settings: Settings | None = None, *, hooks: StageHooks | None = None,
                 try_number: int = 1, started_at: Any = None) -> list[str]:
    """Write one export format into the run's output folder; raises with the format name on failure."""
    from .exports import write_format
    from .result import Transcript

    info = ws.run_info()
    settings = settings_of(ws, settings)
    with _hooks(hooks, settings).stage(ws, f"export-{fmt}", try_number, started_at):
        try:
            transcript = Transcript.load(ws.transcript_file)
            transcript.timings = stage_timings(ws)
            out_dir = Path(info.out_dir)
            names = {**settings.speaker_names, **ws.saved_speaker_names()}  # renamed in the UI since the run
            files = write_format(transcript, out_dir, info.stem, fmt, export_options(settings.replace(
                speaker_names=names)))
            if out_dir.parent == settings.outbox:  # marks whose outputs the folder holds (see output_dir)
                atomic_write_json(out_dir / ".source.json", {"sha256": info.sha256, "name": info.name})
        except Exception as exc:
            atomic_write_json(ws.export_record(fmt), {"format": fmt, "ok": False, "error": f"{exc}"})
            raise RuntimeError(f"export {fmt} failed: {type(exc).__name__}: {exc}") from exc
        atomic_write_json(ws.export_record(fmt), {"format": fmt, "ok": True, "files": [str(f) for f in files]})
    return [str(f) for f in files]


def metrics_stage(ws: Workspace, settings: Settings | None = None, *, hooks: StageHooks | None = None,
                  try_number: int = 1, started_at: Any = None) -> dict[str, Any]:
    """Record the file's row (duration, language, speakers, model, device, outputs) in the metrics database."""
    from .result import Transcript

    hooks = _hooks(hooks, settings or Settings.from_env())
    with hooks.stage(ws, "metrics", try_number, started_at):
        if not ws.run_file.is_file():
            return {}
        info = ws.run_info()
        row: dict[str, Any] = {"file_name": info.name, "sha256": info.sha256, "options_key": info.options_key}
        if ws.transcript_file.is_file():
            t = Transcript.load(ws.transcript_file)
            row.update(audio_duration=t.duration, language=t.language, speakers=len(t.speakers), model=t.model,
                       device=t.device, compute_type=t.compute_type)
        elif ws.info_file.is_file():
            row["audio_duration"] = ws.read(ws.info_file)["duration"]
        row["outputs"] = [f for r in export_results(ws).values() if r.get("ok") for f in r.get("files", [])]
        hooks.file(ws, "skipped" if info.duplicate_of else "running", **row)
        if hooks.store is not None and ws.transcript_file.is_file():
            _index(hooks.store, ws, info, settings_of(ws, settings))
    return {k: v for k, v in row.items() if k != "outputs"}


def _index(store: Any, ws: Workspace, info: RunInfo, settings: Settings) -> None:
    """Make the final transcript searchable in the Transcripts view (never fails the run)."""
    try:
        from .transcripts import index_transcript
        from .transcripts.speakers import effective_names

        index_transcript(store, ws.run_id, ws.transcript_file, file_name=info.name, stem=info.stem,
                         sha256=info.sha256, speaker_names=effective_names(ws, settings))
    except Exception:
        log.warning("transcript of %s not indexed for search", ws.run_id, exc_info=True)


# -- the list ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stage:
    """One step of the pipeline: its name (task id, timing and metrics name), function and place."""

    name: str
    run: Callable[..., Any]
    gpu: bool = False
    """Runs in the ``gpu`` pool/queue of the DAGs."""
    per_format: bool = False
    """One run per export format; recorded as ``<name>-<format>``."""
    analysis: bool = False
    """Part of what turns audio into a transcript (the CLI runs these; exports and bookkeeping follow)."""

    @property
    def doc(self) -> str:
        return (self.run.__doc__ or "").strip()


STAGES: tuple[Stage, ...] = (
    Stage("claim", claim_stage),
    Stage("probe", probe_stage, analysis=True),
    Stage("plan", plan_stage, analysis=True),
    Stage("transcribe", transcribe_stage, gpu=True, analysis=True),
    Stage("diarize", diarize_stage, gpu=True, analysis=True),
    Stage("merge", merge_stage, analysis=True),
    Stage("export", export_stage, per_format=True),
    Stage("metrics", metrics_stage),
    Stage("finalize", finalize_stage),
)
"""The pipeline, in order (transcribe and diarize may run side by side: both need only the plan)."""
STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)


def stage_sort_key(name: str) -> tuple[int, str]:
    """Order recorded stage names (``export-pdf`` sorts with ``export``) as the pipeline runs them."""
    base = name.split("-", 1)[0]
    return (STAGE_NAMES.index(base), name) if base in STAGE_NAMES else (len(STAGE_NAMES), name)
