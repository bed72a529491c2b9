"""The pipeline cut into resumable stages over a run's work folder — what each Airflow task calls.

Every stage reads its inputs from and writes its outputs to the :class:`~tasks.workspace.Workspace`
(heavy data stays on disk, only small dicts are returned), is safe to run again after a crash, and
records why it failed. No Airflow import: the DAGs are thin wrappers around these functions.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .errors import InputError
from .files import atomic_write_json, sha256_file
from .ledger import Ledger
from .settings import Settings
from .workspace import RunInfo, Workspace, archive_original, check_safe, claim, output_stem, quarantine_original

log = logging.getLogger(__name__)

# Per-run options a DAG run's conf may set (anything else in conf is ignored).
RUN_OPTIONS = ("model", "language", "multilingual", "initial_prompt", "hotwords", "num_speakers", "min_speakers",
               "max_speakers", "diarize", "formats")
# Per-run export choices a conf may set (see ExportOptions.from_conf); they do not change the transcript.
EXPORT_OPTIONS = ("speaker_names", "csv_bom", "csv_formula_guard")


def run_overrides(conf: dict[str, Any]) -> dict[str, Any]:
    """Settings overrides from a run's conf/params (unset and empty values ignored)."""
    out = {}
    for key in RUN_OPTIONS:
        value = conf.get(key)
        if value is None or value == "" or value == []:
            continue
        if key == "formats":
            value = tuple(value.split(",")) if isinstance(value, str) else tuple(value)
        out[key] = value
    return out


def run_formats(info: dict[str, Any] | RunInfo) -> list[str]:
    """The export formats of a run: its conf's, else the settings' default."""
    options = info.options if isinstance(info, RunInfo) else info.get("options", {})
    return list(Settings.from_env().replace(**run_overrides(options)).formats)


def run_settings(ws: Workspace, base: Settings | None = None) -> Settings:
    """The settings a run was claimed with (the same for every task and every retry)."""
    info = ws.run_info()
    return (base or Settings.from_env()).replace(**run_overrides(info.options))


@functools.lru_cache(maxsize=4)
def _metrics_store(url: str | None) -> Any:
    """The metrics database of this process (migrated once), or None when off or unreachable."""
    if not url:
        return None
    try:
        from .metrics import MetricsStore

        store = MetricsStore(url)
        store.upgrade()
        return store
    except Exception:  # metrics must never fail a transcription
        log.warning("metrics database %s unavailable; not recording", url.split("@")[-1], exc_info=True)
        return None


def metrics_store(settings: Settings | None = None) -> Any:
    return _metrics_store((settings or Settings.from_env()).metrics_database_url)


class _NoRecorder:
    def update(self, **fields: Any) -> None:
        pass

    def add_attempts(self, attempts: Any) -> None:
        pass


@contextmanager
def stage(ws: Workspace, name: str, try_number: int | None = None, started_at: Any = None) -> Iterator[Any]:
    """Time a stage (``timings/<name>.json`` and a metrics row) and keep the reason when it fails.

    ``started_at``: when the task process started, so the recorded time includes its start-up,
    imports and model loading — what a stage really costs under Airflow.
    """
    from contextlib import nullcontext

    t0 = time.perf_counter()
    store = metrics_store()
    audio_s = ws.read(ws.info_file)["duration"] if ws.info_file.is_file() else None
    recorder: Any = nullcontext(_NoRecorder())
    if store is not None:
        from .metrics import StageRecorder

        if (try_number or 1) > 1:
            try:
                store.mark_interrupted(ws.root.name, name, try_number)
            except Exception:  # metrics must never fail a transcription
                log.warning("metrics: could not close earlier tries of %s", name, exc_info=True)
        recorder = StageRecorder(store, ws.root.name, name, try_number or 1, audio_seconds=audio_s,
                                 started_at=started_at)
    with recorder as rec:
        try:
            yield rec
        except BaseException as exc:
            ws.record_failure(name, exc, try_number)
            raise
        finally:
            atomic_write_json(ws.root / "timings" / f"{name}.json",
                              {"stage": name, "seconds": round(time.perf_counter() - t0, 3),
                               "try_number": try_number})


def record_file(ws: Workspace, status: str, **fields: Any) -> None:
    """Insert or update this run's row in the metrics database (never fails the caller)."""
    store = metrics_store()
    if store is None:
        return
    try:
        store.record_file(ws.root.name, status=status, **fields)
    except Exception:  # metrics must never fail a transcription
        log.warning("metrics: could not record file row of %s", ws.root.name, exc_info=True)


def stage_timings(ws: Workspace) -> dict[str, float]:
    folder = ws.root / "timings"
    if not folder.is_dir():
        return {}
    return {p.stem: ws.read(p)["seconds"] for p in sorted(folder.glob("*.json"))}


def output_dir(outbox: Path, stem: str, sha256: str) -> Path:
    """``outbox/<stem>/``, or ``outbox/<stem>-<sha8>/`` when that name holds another file's outputs."""
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


# -- the inbox scan -------------------------------------------------------------------------------
ORPHAN_AFTER_S = 120.0


def inbox_claims(files: list[dict[str, Any]], settings: Settings | None = None) -> list[dict[str, Any]]:
    """Claim the complete inbox files the sensor reported; return one trigger request per file.

    Each file is renamed into ``work/<run id>/input/`` before its run is started, so a re-scan (or a
    second scheduler) never sees it again; the run id is deterministic, so starting it twice is a
    no-op. Claims whose run never started (a crash between claim and trigger) are returned again.
    """
    from .inbox import Candidate, run_id_for
    from .workspace import AlreadyClaimed

    settings = settings or Settings.from_env()
    for folder in (settings.inbox, settings.work):
        folder.mkdir(parents=True, exist_ok=True, mode=0o750)
    requests = _orphaned_claims(settings)
    for data in files:
        c = Candidate(**data)
        path = Path(c.path)
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue  # gone (claimed by another scheduler, or removed by the user)
        if (st.st_size, st.st_mtime_ns) != (c.size, c.mtime_ns):
            continue  # changed since it looked complete: the next scan takes it
        sha = (_hash_text(os.readlink(path)) if c.is_symlink else sha256_file(path))
        run_id = run_id_for(c, sha)
        ws = Workspace.for_run(settings.work, run_id)
        try:
            claimed = claim(path, ws, settings.inbox)
        except AlreadyClaimed:
            continue
        atomic_write_json(ws.claim_file, {"run_id": run_id, "source": str(path), "input": str(claimed),
                                          "sha256": sha, "claimed_at": time.time()})
        requests.append(_trigger_request(run_id, claimed, sha))
    return requests


def _trigger_request(run_id: str, path: Path, sha256: str) -> dict[str, Any]:
    return {"trigger_run_id": run_id, "conf": {"path": str(path), "sha256": sha256}}


def _hash_text(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def _orphaned_claims(settings: Settings) -> list[dict[str, Any]]:
    """Claimed files whose run never got as far as its own claim step."""
    out = []
    if not settings.work.is_dir():
        return out
    now = time.time()
    for claim_file in settings.work.glob("*/claim.json"):
        ws = Workspace(claim_file.parent)
        if ws.run_file.exists() or (ws.root / "final.json").exists():
            continue
        try:
            data = ws.read(claim_file)
        except (OSError, ValueError):
            continue
        if now - data.get("claimed_at", now) > ORPHAN_AFTER_S and ws.input_file() is not None:
            out.append(_trigger_request(data["run_id"], Path(data["input"]), data["sha256"]))
    return out


# -- stages -----------------------------------------------------------------------------------------
def claim_stage(run_id: str, path: str | Path, conf: dict[str, Any] | None = None,
                settings: Settings | None = None, *, try_number: int = 1, started_at: Any = None) -> dict[str, Any]:
    """Take the file into the run's work folder, hash it, decide its outputs, detect duplicates."""
    from .pipeline import options_key

    conf = conf or {}
    settings = settings or Settings.from_env()
    ws = Workspace.for_run(settings.work, run_id).create()
    if ws.run_file.is_file():  # a retry after the claim already completed
        return ws.run_info().to_dict()
    with stage(ws, "claim", try_number, started_at):
        source = Path(path)
        claimed = claim(source, ws, settings.inbox)
        atomic_write_json(ws.claim_file, {"run_id": run_id, "source": str(source), "input": str(claimed)})
        check_safe(claimed, ws.input_dir)
        effective = settings.replace(**run_overrides(conf))
        sha = sha256_file(claimed)
        if conf.get("sha256") and conf["sha256"] != sha:
            log.warning("%s changed after the inbox scan (sha256 %s -> %s)", claimed.name, conf["sha256"][:12],
                        sha[:12])
        key = options_key(effective)
        duplicate = None if conf.get("reprocess") else Ledger(settings.home / "ledger").lookup(sha, key)
        stem = output_stem(claimed.stem, sha)
        info = RunInfo(
            run_id=run_id, name=claimed.name, stem=stem, work=str(ws.root), input=str(claimed), source=str(source),
            sha256=sha, size=claimed.stat().st_size, out_dir=str(output_dir(settings.outbox, stem, sha)),
            options_key=key,
            options={k: conf[k] for k in (*RUN_OPTIONS, *EXPORT_OPTIONS, "reprocess") if k in conf},
            duplicate_of=duplicate,
            from_inbox=ws.input_dir in source.parents or settings.inbox in source.parents,
        )
        atomic_write_json(ws.run_file, info.to_dict())
    record_file(ws, "skipped" if duplicate else "running", file_name=info.name, sha256=sha, model=effective.model,
                options_key=key)
    return info.to_dict()


def probe_stage(ws: Workspace, *, try_number: int = 1, started_at: Any = None) -> dict[str, Any]:
    """Probe and decode once; later stages memory-map ``audio.npy``."""
    if ws.info_file.is_file() and ws.audio_file.is_file():
        return ws.read(ws.info_file)
    with stage(ws, "probe", try_number, started_at):
        return _decode_input(ws)


def _decode_input(ws: Workspace) -> dict[str, Any]:
    from .audio import decode, probe, save_waveform
    from .pipeline import source_record

    settings = run_settings(ws)
    info = ws.run_info()
    original = Path(info.input)
    if not original.exists() and not original.is_symlink():
        raise InputError(f"the input {original.name} was removed from the run's work folder {ws.root}")
    meta = probe(original)
    audio = decode(original, max_duration_s=settings.max_duration_s)
    save_waveform(audio, ws.audio_file)
    record = {"duration": round(len(audio) / 16000, 3), "probe": meta.to_dict(),
              "source": source_record(original, meta, info.sha256)}
    atomic_write_json(ws.info_file, record)
    return record


def load_audio(ws: Workspace) -> Any:
    """The run's decoded audio; decoded again from the input if ``audio.npy`` went missing."""
    from .audio import load_waveform

    if not ws.audio_file.is_file():
        log.warning("%s is missing (removed during the run?): decoding the input again", ws.audio_file)
        _decode_input(ws)
    return load_waveform(ws.audio_file)


def plan_stage(ws: Workspace, *, try_number: int = 1, started_at: Any = None) -> dict[str, Any]:
    """VAD over the whole file and the chunk plan."""
    from .pipeline import make_plan

    if ws.plan_file.is_file():
        plan = ws.read(ws.plan_file)
        return {"chunks": len(plan["spans"]), "target_s": plan["target_s"]}
    settings = run_settings(ws)
    with stage(ws, "plan", try_number, started_at):
        plan = make_plan(load_audio(ws), settings)
        atomic_write_json(ws.plan_file, plan.to_dict())
    return {"chunks": len(plan.spans), "target_s": plan.target_s, "speech_s": round(plan.speech_s, 1)}


def transcribe_stage(ws: Workspace, *, try_number: int = 1, started_at: Any = None) -> dict[str, Any]:
    """Transcribe chunk by chunk, resuming from the last checkpointed chunk; OOM shrinks as it goes."""
    from .checkpoint import ChunkCheckpoint
    from .chunking import ChunkPlan
    from .transcription import transcribe_plan

    if ws.transcription_file.is_file():
        return _transcription_summary(ws.read(ws.transcription_file))
    settings = run_settings(ws)
    (ws.root / "transcribe.pid").write_text(str(os.getpid()))
    with stage(ws, "transcribe", try_number, started_at) as rec:
        plan = ChunkPlan.from_dict(ws.read(ws.plan_file))
        checkpoint = ChunkCheckpoint(ws.chunks_dir)
        earlier = len(checkpoint.load_attempts())  # attempts of previous tries of this task
        run = transcribe_plan(load_audio(ws), plan, settings, checkpoint=checkpoint)
        rec.add_attempts(run.attempts[earlier:])
        rec.update(detail={"chunks": len(run.chunks), "resumed_chunks": run.resumed_chunks})
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


def diarize_stage(ws: Workspace, *, try_number: int = 1, started_at: Any = None) -> dict[str, Any]:
    """Diarize the whole file (never chunk by chunk); the result is checkpointed as a whole."""
    from .diarization import diarize

    if ws.diarization_file.is_file():
        data = ws.read(ws.diarization_file)
        return {"speakers": len(data.get("speakers", [])), "enabled": data.get("enabled", True)}
    settings = run_settings(ws)
    with stage(ws, "diarize", try_number, started_at) as rec:
        speech = bool(ws.read(ws.plan_file).get("regions")) if ws.plan_file.is_file() else True
        if not settings.diarize or not speech:  # nothing to diarize in a file without speech
            data = {"enabled": settings.diarize, "turns": [], "exclusive": [], "speakers": [], "attempts": [],
                    "device": "none", "timings": {}, "params": {}, "skipped": None if speech else "no speech"}
        else:
            (ws.root / "diarize.pid").write_text(str(os.getpid()))
            progress = ws.root / "diarize.progress"
            result = diarize(load_audio(ws), settings, on_step=lambda step: progress.write_text(step))
            data = {"enabled": True, **asdict(result)}
            rec.add_attempts(result.attempts)
            rec.update(detail={"speakers": len(result.speakers), "steps": result.timings})
        atomic_write_json(ws.diarization_file, data)
    return {"speakers": len(data["speakers"]), "enabled": data["enabled"]}


def merge_stage(ws: Workspace, *, try_number: int = 1, started_at: Any = None) -> dict[str, Any]:
    """Assign words to speakers and write the canonical ``transcript.json``."""
    from .diarization import Diarization
    from .oom import RunState
    from .pipeline import build_transcript
    from .result import Attempt, Turn
    from .transcription import ChunkResult, TranscriptionRun

    settings = run_settings(ws)
    with stage(ws, "merge", try_number, started_at):
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
        atomic_write_json(ws.transcript_file, transcript.to_dict())
        if settings.log_text:  # debug only: transcript text never reaches logs otherwise
            log.info("transcript of %s: %s", ws.root.name, transcript.text[:4000])
    return {"segments": len(transcript.segments), "speakers": transcript.speakers, "language": transcript.language,
            "duration": transcript.duration}


def export_stage(ws: Workspace, fmt: str, *, try_number: int = 1, started_at: Any = None) -> list[str]:
    """Write one export format into the run's output folder; raises with the format name on failure."""
    from .exports import ExportOptions, write_format
    from .result import Transcript

    info = ws.run_info()
    with stage(ws, f"export-{fmt}", try_number, started_at):
        try:
            transcript = Transcript.load(ws.transcript_file)
            transcript.timings = stage_timings(ws)
            options = ExportOptions.from_conf({k: info.options[k] for k in EXPORT_OPTIONS if k in info.options})
            out_dir = Path(info.out_dir)
            files = write_format(transcript, out_dir, info.stem, fmt, options)
            atomic_write_json(out_dir / ".source.json", {"sha256": info.sha256, "name": info.name})
        except Exception as exc:
            atomic_write_json(ws.exports_dir / f"{fmt}.json", {"format": fmt, "ok": False, "error": f"{exc}"})
            raise RuntimeError(f"export {fmt} failed: {type(exc).__name__}: {exc}") from exc
        atomic_write_json(ws.exports_dir / f"{fmt}.json", {"format": fmt, "ok": True, "files": [str(f) for f in files]})
    return [str(f) for f in files]


def export_results(ws: Workspace) -> dict[str, dict[str, Any]]:
    if not ws.exports_dir.is_dir():
        return {}
    return {p.stem: ws.read(p) for p in ws.exports_dir.glob("*.json")}


def metrics_stage(ws: Workspace, *, try_number: int = 1, started_at: Any = None) -> dict[str, Any]:
    """Record the file's row (duration, language, speakers, model, device, outputs) in the metrics database."""
    from .result import Transcript

    with stage(ws, "metrics", try_number, started_at):
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
        record_file(ws, "skipped" if info.duplicate_of else "running", **row)
    return {k: v for k, v in row.items() if k != "outputs"}


RETRYABLE_OUTCOMES = ("quarantined", "partial")  # clearing and re-running finalize re-evaluates these
_FILE_STATUS = {"archived": "success", "duplicate": "skipped", "not_claimed": "skipped", "partial": "failed",
                "quarantined": "quarantined"}


def finalize_stage(ws: Workspace, settings: Settings | None = None) -> dict[str, Any]:
    """Archive the original after its outputs are durable, or quarantine it with a reason.

    Returns ``{"outcome": "archived"|"duplicate"|"quarantined"|"partial", …}``; only "archived" and
    "duplicate" are successes. "partial": the transcript exists but some export formats failed — the
    original is archived (nothing is lost) and the run is reported failed with the formats that failed.
    """
    settings = settings or Settings.from_env()
    previous = ws.read(ws.root / "final.json") if (ws.root / "final.json").is_file() else None
    if previous and previous["outcome"] not in RETRYABLE_OUTCOMES:
        return previous
    info = ws.run_info() if ws.run_file.is_file() else None
    original = Path(info.input) if info else ws.input_file()
    if previous and previous["outcome"] == "quarantined" and info:  # a retry after a fix: take it back
        held = Path(previous["folder"]) / Path(info.input).name
        if held.exists() or held.is_symlink():
            original = held
    if info is None and original is None:
        outcome = {"outcome": "not_claimed", "failures": ws.failures()}
        atomic_write_json(ws.root / "final.json", outcome)
        return outcome
    formats = run_formats(info) if info else []
    results = export_results(ws)
    ok = [f for f in formats if results.get(f, {}).get("ok")]
    failed = [f for f in formats if f not in ok]
    if info and info.duplicate_of:
        outcome = {"outcome": "duplicate", "archived": _keep_original(info, original, settings),
                   "duplicate_of": info.duplicate_of}
    elif info and ws.transcript_file.is_file() and ok:
        archived = _keep_original(info, original, settings) or (previous or {}).get("archived")
        if previous and previous["outcome"] == "quarantined":  # recovered: its reason no longer applies
            shutil.rmtree(previous["folder"], ignore_errors=True)
        Ledger(settings.home / "ledger").record(info.sha256, info.options_key, run_id=info.run_id,
                                                out_dir=info.out_dir, archived=archived, formats=ok)
        outcome = {"outcome": "archived" if not failed else "partial", "archived": archived,
                   "out_dir": info.out_dir, "formats": ok, "failed_formats": failed}
    else:
        failures = ws.failures()
        last = failures[-1] if failures else {"stage": "unknown", "error_type": "Incomplete",
                                              "message": "the pipeline did not complete; see the Airflow task logs"}
        reason = {
            "file": info.name if info else (original.name if original else None),
            "sha256": info.sha256 if info else None,
            "run_id": ws.root.name,
            "stage": last["stage"],
            "error_type": last["error_type"],
            "kind": last.get("kind"),
            "message": last["message"],
            "attempts": failures,
            "quarantined_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if info is not None and not info.from_inbox:  # the source stays where it is; drop our copy
            reason["source"] = info.source
            if original is not None:
                original.unlink(missing_ok=True)
            original = None
        folder = quarantine_original(original, settings.quarantine, ws.root.name, reason)
        outcome = {"outcome": "quarantined", "folder": str(folder), "reason": reason}
    atomic_write_json(ws.root / "final.json", outcome)
    _cleanup(ws)
    error = None
    if outcome["outcome"] == "quarantined":
        error = f"{outcome['reason']['stage']}: {outcome['reason']['error_type']}: {outcome['reason']['message']}"
    elif outcome["outcome"] == "partial":
        error = "export failed: " + ", ".join(outcome["failed_formats"])
    record_file(ws, _FILE_STATUS[outcome["outcome"]], error=error)
    return outcome


def _keep_original(info: RunInfo, original: Path | None, settings: Settings) -> str | None:
    """Archive an inbox original (move); a copy of an outside source is just dropped. Returns its place."""
    if original is None or not (original.exists() or original.is_symlink()):
        return None
    if info.from_inbox:
        return str(archive_original(original, settings.archive))
    original.unlink()
    return info.source


def _cleanup(ws: Workspace) -> None:
    """Drop the decoded audio and checkpoints (privacy, disk); keep the small records."""
    ws.audio_file.unlink(missing_ok=True)
    if ws.chunks_dir.is_dir():
        for p in ws.chunks_dir.iterdir():
            p.unlink()
        ws.chunks_dir.rmdir()
