"""The whole pipeline for one file in this process — what the CLI runs.

:func:`transcribe_file` executes the same stages (:data:`tasks.stages.STAGES`) as the Airflow DAGs, over a
temporary work folder: claim (the file is read in place) → probe → plan → transcribe ∥ diarize (side by side
on a CPU-only host, as the DAG's tasks run; ``Settings.side_by_side``) → merge, then, with ``out_dir``, each
export format. So the CLI and a DAG run give the same transcript for the same
file and settings, and record the same stage names.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from .recording import ProgressFn, StageHooks, stage_timings
from .result import Transcript
from .settings import Settings
from .stages import STAGES, claim_stage, export_stage
from .workspace import Workspace

CLI_RUN_ID = "cli"
ExportFn = Callable[[str, list[str], Exception | None], None]


def transcribe_file(
    path: str | Path,
    settings: Settings | None = None,
    *,
    conf: Mapping[str, Any] | None = None,
    work_dir: str | Path | None = None,
    progress: ProgressFn | None = None,
    out_dir: str | Path | None = None,
    stem: str | None = None,
    on_export: ExportFn | None = None,
) -> Transcript:
    """Transcribe and diarize one file in this process; raises the typed errors of :mod:`tasks.errors`.

    ``settings``: the base settings (default: the environment); ``conf``: per-run options, as a DAG run's
    conf gives them. ``work_dir``: keep the run folder there (a second call resumes from its checkpoints);
    default: a temporary folder, removed afterwards. ``out_dir``: also write the run's export formats there
    (``<stem>.<format>``), reporting each to ``on_export(fmt, files, error)``; without it a failing format raises.
    """
    settings = settings or Settings.from_env()
    hooks = StageHooks(store=None, progress=progress)
    with ExitStack() as stack:
        work = Path(work_dir) if work_dir else Path(stack.enter_context(tempfile.TemporaryDirectory(
            prefix="securetranscribe-")))
        target = Path(out_dir) if out_dir is not None else work / "outputs"
        info = claim_stage(CLI_RUN_ID, path, dict(conf or {}), settings, hooks=hooks, work=work, out_dir=target,
                           stem=stem, take=False)
        ws = Workspace(info["work"])
        analysis = [stage for stage in STAGES if stage.analysis]
        heavy = [stage for stage in analysis if stage.gpu]
        together = _side_by_side(settings, ws)
        for stage in analysis:
            if not (together and stage.gpu):
                stage.run(ws, settings, hooks=hooks)
            elif stage is heavy[0]:  # all heavy stages at once, in place of the first
                _run_side_by_side(heavy, ws, together, hooks)
        if out_dir is not None:
            _export(ws, settings, hooks, on_export)
        transcript = Transcript.load(ws.transcript_file)
        transcript.timings = stage_timings(ws)
        return transcript


def _side_by_side(settings: Settings, ws: Workspace) -> Settings | None:
    """The settings for transcribe ∥ diarize, or None to run them one after the other.

    Side by side only on the CPU (one GPU runs one heavy stage at a time, as the DAGs' pool does), with
    diarization on and at least 2 cores; each stage then gets half the cores unless ``cpu_threads`` is set.
    """
    from .devices import usable_cores, whisper_device
    from .options import run_settings

    run = run_settings(settings, ws.run_info().options)
    if not (settings.side_by_side and run.diarize and usable_cores() >= 2 and whisper_device(run.device) == "cpu"):
        return None
    return settings if settings.cpu_threads > 0 else settings.replace(cpu_threads=usable_cores() // 2)


def _run_side_by_side(stages: list[Any], ws: Workspace, settings: Settings, hooks: StageHooks) -> None:
    """Run the heavy stages in threads at once (CTranslate2 and torch release the GIL while they compute);
    the first failure is raised once both have ended."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(stages), thread_name_prefix="stage") as pool:
        futures = [pool.submit(stage.run, ws, settings, hooks=hooks) for stage in stages]
    for future in futures:
        future.result()


def _export(ws: Workspace, settings: Settings, hooks: StageHooks, report: ExportFn | None) -> None:
    from .options import run_settings

    for fmt in run_settings(settings, ws.run_info().options).formats:
        try:
            files = export_stage(ws, fmt, settings, hooks=hooks)
        except Exception as exc:
            if report is None:
                raise
            report(fmt, [], exc)
        else:
            if report is not None:
                report(fmt, files, None)
