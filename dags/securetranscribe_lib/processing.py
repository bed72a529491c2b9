"""Factory for the per-file processing DAG (one run per file), shared by the inbox and archive paths.

One task per stage of :data:`tasks.stages.STAGES` (the list the CLI runs too); each task is a thin wrapper
that calls its stage with this run's work folder. Heavy data moves between tasks as files in that folder;
the claim task's record (``RunInfo``: work folder, file, outputs, options) flows to every task that needs
it. The Params are derived from the option declarations in ``tasks/settings.py``.

What a run tells others (``tasks/outcome.py``): finalize pushes the run's note (XCom ``note``: the file and
the outcome, or the quarantine reason, in one line; the ``securetranscribe_runs`` plugin puts it on the
Airflow run), and an archived file emits an event of the asset ``securetranscribe/transcripts`` (through
the alias below: other outcomes emit nothing) whose extras name the run, file, outputs, language,
duration and speakers — schedule your own DAGs on it (``docs/examples/``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Asset, AssetAlias, ExceptionRetryPolicy, Param, RetryAction, RetryRule, dag, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from tasks.options import param_specs
from tasks.outcome import TRANSCRIPTS_ASSET
from tasks.stages import STAGES

GPU_POOL = "gpu"
GPU_QUEUE = "gpu"
TRANSCRIPTS = Asset(TRANSCRIPTS_ASSET)
"""One event per archived file; extras: see ``tasks.outcome.transcript_event``."""
TRANSCRIPTS_ALIAS = AssetAlias("securetranscribe-transcripts")
"""finalize's outlet: an event for TRANSCRIPTS only when finalize adds one (archived files)."""
DOCS = {s.name: s.doc for s in STAGES}
"""Each task's documentation in the UI: its stage function's docstring."""

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


def run_params() -> dict[str, Param]:
    """The file to process, and every per-run option (null: the settings' value)."""
    return {
        "path": Param("", type="string", title="File", description="File to process. Inbox files are moved into "
                      "the run's work folder; files elsewhere are copied, never moved."),
        "sha256": Param(None, type=["null", "string"], description="Content hash seen by the inbox scan."),
        **{name: Param(**spec) for name, spec in param_specs().items()},
    }


def _workspace(info: dict[str, Any]):
    from tasks.workspace import Workspace

    return Workspace(info["work"])


def _attempt(context: dict[str, Any]) -> dict[str, Any]:
    """This try's number and the task process's start (stage timings include start-up and model loading)."""
    ti = context["ti"]
    return {"try_number": ti.try_number, "started_at": getattr(ti, "start_date", None)}


def build_processing_dag(dag_id: str, *, priority_weight: int, description: str, doc_md: str,
                         tags: list[str], max_active_runs: int = 16) -> Any:
    """The processing DAG: claim → probe → plan → transcribe (gpu) ∥ diarize (gpu) → merge → exports → finalize."""

    @dag(
        dag_id=dag_id,
        description=description,
        doc_md=doc_md,
        schedule=None,
        catchup=False,
        max_active_runs=max_active_runs,
        tags=tags,
        params=run_params(),
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
        @task(retry_policy=NO_RETRY_ON_BAD_INPUT, doc_md=DOCS["claim"])
        def claim(**context: Any) -> dict[str, Any]:
            from tasks.options import run_settings
            from tasks.settings import Settings
            from tasks.stages import claim_stage
            from tasks.workspace import AlreadyClaimed

            params = dict(context["params"])
            if not params.get("path"):
                raise AirflowFailException("conf must give the file to process: {\"path\": \"…\"}")
            try:
                info = claim_stage(context["run_id"], params["path"], params, **_attempt(context))
            except AlreadyClaimed as exc:
                raise AirflowSkipException(str(exc)) from exc
            formats = list(run_settings(Settings.from_env(), info["options"]).formats)
            return {**info, "formats": formats}  # shown in the UI's XCom tab

        @task.short_circuit(ignore_downstream_trigger_rules=False)
        def is_new(info: dict[str, Any]) -> bool:
            """Continue unless the same content was already processed with the same settings."""
            return not info.get("duplicate_of")

        @task(retry_policy=NO_RETRY_ON_BAD_INPUT, doc_md=DOCS["probe"])
        def probe(info: dict[str, Any], **context: Any) -> dict[str, Any]:
            from tasks.stages import probe_stage

            record = probe_stage(_workspace(info), **_attempt(context))
            return {"duration": record["duration"], "codec": record["probe"]["codec"]}

        @task(retry_policy=NO_RETRY_ON_BAD_INPUT, doc_md=DOCS["plan"])
        def plan(info: dict[str, Any], probed: dict[str, Any], **context: Any) -> dict[str, Any]:
            from tasks.stages import plan_stage

            return {**probed, **plan_stage(_workspace(info), **_attempt(context))}

        @task(pool=GPU_POOL, queue=GPU_QUEUE, retries=3, retry_policy=GPU_RETRY, doc_md=DOCS["transcribe"]
              + "\n\nThe model loads once per file; each finished chunk is checkpointed, so a retry resumes after "
              "the last one. On GPU out-of-memory the batch, then the chunk length shrink to floors, then the "
              "work moves to CPU; every try is recorded.")
        def transcribe(info: dict[str, Any], planned: dict[str, Any], **context: Any) -> dict[str, Any]:
            from tasks.stages import transcribe_stage

            return transcribe_stage(_workspace(info), **_attempt(context))

        @task(pool=GPU_POOL, queue=GPU_QUEUE, retries=3, retry_policy=GPU_RETRY, doc_md=DOCS["diarize"])
        def diarize(info: dict[str, Any], planned: dict[str, Any], **context: Any) -> dict[str, Any]:
            from tasks.stages import diarize_stage

            return diarize_stage(_workspace(info), **_attempt(context))

        @task(retry_policy=NO_RETRY_ON_BAD_INPUT, doc_md=DOCS["merge"])
        def merge(info: dict[str, Any], transcribed: dict[str, Any], diarized: dict[str, Any],
                  **context: Any) -> list[str]:
            """Returns the formats to export (one mapped export task each)."""
            from tasks.stages import merge_stage

            return merge_stage(_workspace(info), **_attempt(context))["formats"]

        @task(map_index_template="{{ export_format }}", retries=2, doc_md=DOCS["export"] + "\n\nOne task per "
              "format: a failing format never loses the others, and each is retried on its own; its log names "
              "the format and the cause.")
        def export(info: dict[str, Any], fmt: str, **context: Any) -> list[str]:
            from airflow.sdk import get_current_context

            from tasks.stages import export_stage

            get_current_context()["export_format"] = fmt  # type: ignore[index]  # names the mapped task in the UI
            return export_stage(_workspace(info), fmt, **_attempt(context))

        @task(trigger_rule="all_done", retries=3, doc_md=DOCS["metrics"])
        def metrics(**context: Any) -> dict[str, Any]:
            from tasks.settings import Settings
            from tasks.stages import metrics_stage
            from tasks.workspace import Workspace

            # all_done: runs even when claim failed, so the folder comes from the run id, not claim's record
            return metrics_stage(Workspace.for_run(Settings.from_env().work, context["run_id"]),
                                 **_attempt(context))

        # inlets: declared so the DAG processor registers the asset when it parses this DAG. Through the alias
        # alone Airflow creates it at the first event, and two finalize tasks ending at once on a fresh
        # deployment raced on that insert (UNIQUE constraint asset.name, asset.uri): one run failed.
        @task(trigger_rule="all_done", retries=3, inlets=[TRANSCRIPTS], outlets=[TRANSCRIPTS_ALIAS],
              doc_md=DOCS["finalize"] + "\n\nA "
              "quarantined file fails this run visibly, with the reason (also the run's note). An archived file "
              f"emits an event of the asset `{TRANSCRIPTS_ASSET}` with its run id, file, outputs, language, "
              "duration and speakers.")
        def finalize(**context: Any) -> dict[str, Any]:
            from tasks.outcome import run_note, transcript_event
            from tasks.settings import Settings
            from tasks.stages import finalize_stage
            from tasks.workspace import Workspace

            ws = Workspace.for_run(Settings.from_env().work, context["run_id"])
            outcome = finalize_stage(ws)
            context["ti"].xcom_push(key="note", value=run_note(ws, outcome))  # kept even when this task fails
            extra = transcript_event(ws, outcome)
            if extra is not None:
                context["outlet_events"][TRANSCRIPTS_ALIAS].add(TRANSCRIPTS, extra=extra)
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
        planned = plan(info, probed)
        formats = merge(info, transcribe(info, planned), diarize(info, planned))
        export.partial(info=info).expand(fmt=formats) >> metrics() >> finalize()

    return processing()
