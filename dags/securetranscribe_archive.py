"""
### securetranscribe_archive — work through an archive of recordings, one partition per data interval

Point `$SECURETRANSCRIBE_BACKFILL_ROOT` at an archive laid out `YYYY/MM/DD/…` (the pattern is
`$SECURETRANSCRIBE_BACKFILL_PATTERN`; `$SECURETRANSCRIBE_BACKFILL_MODE=mtime` takes files of a flat folder
by modification date). Each run of this Airflow DAG covers one data interval (`@daily` by default):

`list_partition` lists the audio files of the interval's partition (hidden, temporary and non-audio files
are left alone; links leaving the archive are refused) and `process_files` starts one
`securetranscribe_process_batch` run per file — the same processing as inbox files, at batch priority —
then waits, deferred (no worker slot held), until they finish. The run fails when a file failed.

- Backfill a date range: `airflow backfill create --dag-id securetranscribe_archive --from-date 2024-03-01
  --to-date 2024-03-31`, or the UI's backfill dialog.
- Idempotent: a file's run id is derived from its partition, name, content hash and options, so running
  an interval again starts nothing new (a file whose earlier run ended in quarantine is retried); content
  already processed with the same model and options (e.g. from the inbox) is recorded as a duplicate.
- Archive files are copied, never moved or modified. Outputs land in `outbox/<stem>/`, like inbox files.
- Conf: every per-run option of the processing DAG (`model`, `language`, `formats`, speaker hints, `hotwords`,
  `initial_prompt`, `diarize`, `speaker_names`, `csv_bom`, `reprocess` …), passed on to each file's run.
"""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import CronDataIntervalTimetable, Param, dag, task

from tasks.options import param_specs
from tasks.settings import Settings

SETTINGS = Settings.from_env()
BATCH_DAG_ID = "securetranscribe_process_batch"

PARAMS = {name: Param(**spec) for name, spec in param_specs().items()}
"""Every per-run option (tasks/settings.py, knob(run=True)); passed on to each file's processing run."""


@dag(
    dag_id="securetranscribe_archive",
    description="Backfill an archive of recordings: one partition per data interval, one processing run per file",
    doc_md=__doc__,
    # Data intervals: the run of 2024-03-01 covers [2024-03-01, 2024-03-02), so a backfill's --from-date and
    # --to-date name the first and the last partition processed.
    schedule=CronDataIntervalTimetable(SETTINGS.backfill_schedule, timezone=SETTINGS.backfill_timezone),
    start_date=datetime.fromisoformat(SETTINGS.backfill_start_date).replace(tzinfo=ZoneInfo(SETTINGS.backfill_timezone)),
    catchup=SETTINGS.backfill_catchup,
    max_active_runs=2,
    params=PARAMS,
    tags=["securetranscribe", "archive"],
    default_args={"retries": 2, "retry_delay": timedelta(seconds=10)},
)
def securetranscribe_archive() -> None:
    @task
    def list_partition(**context) -> list[dict]:
        """List the audio files of this interval's partition; one trigger request (run id + conf) per file."""
        from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

        from tasks.archive import partition_requests

        settings = Settings.from_env()
        if settings.backfill_root is None:
            raise AirflowSkipException("SECURETRANSCRIBE_BACKFILL_ROOT is not set: no archive to backfill")
        if context.get("data_interval_start") is None:
            raise AirflowFailException("this run has no data interval: trigger it with a logical date, or create a "
                                       "backfill (airflow backfill create --dag-id securetranscribe_archive …)")
        return partition_requests(settings, context["data_interval_start"], context["data_interval_end"],
                                  dict(context["params"]), nonce=context["run_id"])

    TriggerDagRunOperator.partial(
        task_id="process_files",
        trigger_dag_id=BATCH_DAG_ID,
        logical_date=None,
        skip_when_already_exists=True,
        # Wait (deferred in the triggerer: no worker slot held), so the archive run's state is its files'
        # state and a backfill's max_active_runs bounds the partitions in flight.
        wait_for_completion=True,
        deferrable=True,
        poke_interval=10,
        # A retry would find its run existing and skip, hiding the failure: the processing run retries its
        # own tasks, and running the interval again retries quarantined files under a new run id.
        retries=0,
        openlineage_inject_parent_info=False,
        map_index_template="{{ task.trigger_run_id }}",
        doc_md="Start one securetranscribe_process_batch run per file (idempotent per run id) and wait for it.",
    ).expand_kwargs(list_partition())


securetranscribe_archive()
