"""Factory for the per-file processing DAG (one run per file), shared by the inbox and archive paths.

Every task is a thin wrapper around :mod:`tasks.stages`; heavy data moves between tasks as files in
the run's work folder, XCom carries only small metadata. Imports of the pipeline happen inside tasks,
so parsing this file stays fast.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import ExceptionRetryPolicy, Param, RetryAction, RetryRule, dag, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

GPU_POOL = "gpu"
GPU_QUEUE = "gpu"

# Bad input never gets better by retrying: fail at once, finalize quarantines the file.
NO_RETRY_ON_BAD_INPUT = ExceptionRetryPolicy(
    rules=[RetryRule(exception="tasks.errors.InputError", action=RetryAction.FAIL,
                     reason="bad input: the file goes to quarantine")]
)
GPU_RETRY = ExceptionRetryPolicy(
    rules=[
        RetryRule(exception="tasks.errors.InputError", action=RetryAction.FAIL, reason="bad input"),
        RetryRule(exception="tasks.errors.GpuOutOfMemory", action=RetryAction.RETRY,
                  retry_delay=timedelta(seconds=5), reason="GPU out of memory: the next try runs smaller"),
    ]
)

PARAMS = {
    "path": Param("", type="string", title="File", description="File to process. Inbox files are moved into "
                  "the run's work folder; files elsewhere are copied, never moved."),
    "sha256": Param(None, type=["null", "string"], description="Content hash seen by the inbox scan."),
    "num_speakers": Param(None, type=["null", "integer"], minimum=1, description="Exact number of speakers."),
    "min_speakers": Param(None, type=["null", "integer"], minimum=1),
    "max_speakers": Param(None, type=["null", "integer"], minimum=1),
    "language": Param(None, type=["null", "string"], description="ISO code; empty: detect."),
    "model": Param(None, type=["null", "string"], description="Whisper model name or path; empty: settings."),
    "multilingual": Param(None, type=["null", "boolean"], description="Detect the language per chunk."),
    "initial_prompt": Param(None, type=["null", "string"], description="Vocabulary hint for Whisper."),
    "hotwords": Param(None, type=["null", "string"], description="Words Whisper should prefer."),
    "diarize": Param(None, type=["null", "boolean"], description="false: transcription only."),
    "formats": Param(None, type=["null", "array"], description="Export formats; empty: settings "
                     "(txt json csv srt vtt pdf docx md rttm)."),
    "speaker_names": Param({}, type="object", description='Display names, e.g. {"SPEAKER_00": "Diane"}.'),
    "csv_bom": Param(False, type="boolean", description="CSV exports with a UTF-8 byte-order mark (Excel)."),
    "csv_formula_guard": Param(True, type="boolean", description="Prefix CSV cells starting with = + - @ with "
                               "an apostrophe so spreadsheets never run them as formulas."),
    "reprocess": Param(False, type="boolean", description="Process again even if this content was done."),
}


EXPORT_DOC = """Write one export format into the file's outbox folder. One task per format: a failing format
never loses the others, and each is retried on its own; its log names the format and the cause."""


def _workspace(context: dict[str, Any]):
    from tasks.settings import Settings
    from tasks.workspace import Workspace

    return Workspace.for_run(Settings.from_env().work, context["run_id"])


def _attempt(context: dict[str, Any]) -> dict[str, Any]:
    """This try's number and the task process's start (stage timings include start-up and model loading)."""
    ti = context["ti"]
    return {"try_number": ti.try_number, "started_at": getattr(ti, "start_date", None)}


def build_processing_dag(dag_id: str, *, priority_weight: int, description: str, doc_md: str,
                         tags: list[str], max_active_runs: int = 16) -> Any:
    """The processing DAG: claim → probe → plan → transcribe (gpu) → diarize (gpu) → merge → exports → finalize."""

    @dag(
        dag_id=dag_id,
        description=description,
        doc_md=doc_md,
        schedule=None,
        catchup=False,
        max_active_runs=max_active_runs,
        tags=tags,
        params=PARAMS,
        default_args={
            "retries": 2,
            "retry_delay": timedelta(seconds=10),
            "retry_exponential_backoff": 2.0,
            "max_retry_delay": timedelta(minutes=10),
            "priority_weight": priority_weight,
            "weight_rule": "absolute",
        },
        render_template_as_native_obj=True,
    )
    def processing() -> None:
        @task(retry_policy=NO_RETRY_ON_BAD_INPUT)
        def claim(**context: Any) -> dict[str, Any]:
            """Take the file atomically into this run's work folder, hash it, and check whether this content
            was already processed with the same model and options (then it is skipped and recorded)."""
            from tasks.stages import claim_stage, run_formats
            from tasks.workspace import AlreadyClaimed

            params = dict(context["params"])
            if not params.get("path"):
                raise AirflowFailException("conf must give the file to process: {\"path\": \"…\"}")
            try:
                info = claim_stage(context["run_id"], params["path"], params, **_attempt(context))
            except AlreadyClaimed as exc:
                raise AirflowSkipException(str(exc)) from exc
            return {**info, "formats": run_formats(info)}  # shown in the UI's XCom tab

        @task.short_circuit(ignore_downstream_trigger_rules=False)
        def is_new(info: dict[str, Any]) -> bool:
            """Continue unless the same content was already processed with the same settings."""
            return not info.get("duplicate_of")

        @task(retry_policy=NO_RETRY_ON_BAD_INPUT)
        def probe(info: dict[str, Any], **context: Any) -> dict[str, Any]:
            """Probe the container and decode once to 16 kHz mono; bad or over-long audio is rejected."""
            from tasks.stages import probe_stage

            record = probe_stage(_workspace(context), **_attempt(context))
            return {"duration": record["duration"], "codec": record["probe"]["codec"]}

        @task(retry_policy=NO_RETRY_ON_BAD_INPUT)
        def plan(probed: dict[str, Any], **context: Any) -> dict[str, Any]:
            """Run VAD once over the file and cut it into chunks between speech groups."""
            from tasks.stages import plan_stage

            return plan_stage(_workspace(context), **_attempt(context))

        @task(pool=GPU_POOL, queue=GPU_QUEUE, retries=3, retry_policy=GPU_RETRY)
        def transcribe(planned: dict[str, Any], **context: Any) -> dict[str, Any]:
            """faster-whisper over the chunks, in this one process (the model loads once per file). Each
            finished chunk is checkpointed: a retry resumes after the last one. On GPU out-of-memory the
            batch, then the chunk length shrink down to floors, then the work moves to CPU; every try is
            recorded."""
            from tasks.stages import transcribe_stage

            return transcribe_stage(_workspace(context), **_attempt(context))

        @task(pool=GPU_POOL, queue=GPU_QUEUE, retries=3, retry_policy=GPU_RETRY)
        def diarize(planned: dict[str, Any], **context: Any) -> dict[str, Any]:
            """Speaker diarization of the whole file with pyannote.audio (segmentation-3.0 + CAM++); skipped
            for a file in which VAD found no speech."""
            from tasks.stages import diarize_stage

            return diarize_stage(_workspace(context), **_attempt(context))

        @task(retry_policy=NO_RETRY_ON_BAD_INPUT)
        def merge(transcribed: dict[str, Any], diarized: dict[str, Any], **context: Any) -> list[str]:
            """Give every word a speaker and write the canonical transcript JSON; returns the formats to export."""
            from tasks.stages import merge_stage, run_formats

            ws = _workspace(context)
            merge_stage(ws, **_attempt(context))
            return run_formats(ws.run_info())

        @task(map_index_template="{{ export_format }}", retries=2, doc_md=EXPORT_DOC)
        def export(fmt: str, **context: Any) -> list[str]:
            """Write one export format."""
            from airflow.sdk import get_current_context

            from tasks.stages import export_stage

            get_current_context()["export_format"] = fmt  # type: ignore[index]  # names the mapped task in the UI
            return export_stage(_workspace(context), fmt, **_attempt(context))

        @task(trigger_rule="all_done", retries=3)
        def metrics(**context: Any) -> dict[str, Any]:
            """Record the file's row in the metrics database (each stage already recorded its own timing row)."""
            from tasks.stages import metrics_stage

            return metrics_stage(_workspace(context), **_attempt(context))

        @task(trigger_rule="all_done", retries=3)
        def finalize(**context: Any) -> dict[str, Any]:
            """Outputs are durable: archive the original to archive/YYYY/MM/DD/. Otherwise move it to
            quarantine/ with a reason.json, and fail this run visibly."""
            from tasks.stages import finalize_stage

            outcome = finalize_stage(_workspace(context))
            if outcome["outcome"] == "quarantined":
                r = outcome["reason"]
                raise AirflowFailException(
                    f"quarantined {r['file']}: {r['stage']} failed: {r['error_type']}: {r['message']}")
            if outcome["outcome"] == "partial":
                raise AirflowFailException(f"export formats failed: {', '.join(outcome['failed_formats'])}; "
                                           "the transcript and the other formats are in " + outcome["out_dir"])
            return outcome

        info = claim()
        probed = probe(info)
        is_new(info) >> probed
        planned = plan(probed)
        formats = merge(transcribe(planned), diarize(planned))
        export.expand(fmt=formats) >> metrics() >> finalize()

    return processing()
