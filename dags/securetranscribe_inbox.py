"""
### securetranscribe_inbox — watch the inbox, start one processing run per file

Drop audio or video files into `$SECURETRANSCRIBE_HOME/inbox/`. This DAG runs continuously, one run at a
time: `wait_for_files` waits (deferred in the triggerer, holding no worker slot) until files are complete —
size, mtime and ctime unchanged for a few seconds (a finished recording moved in, or a file its writer
has closed: at the next look) — then
`claim_files` moves each one atomically into its own work folder and `start_runs` starts one
`securetranscribe_process` run per file, with a run id that shows the file name. An idle inbox keeps a
single waiting run: no empty runs in the grid.

Ignored: hidden files, `~$…` locks, `.part`/`.crdownload`/`.tmp` downloads, folders. Symlinks and
non-audio files get a run too, which refuses them into `quarantine/` with a reason.
"""

from datetime import UTC, datetime, timedelta

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import dag, task
from securetranscribe_airflow.inbox import InboxSensor

from tasks.settings import Settings

SETTINGS = Settings.from_env()


@dag(
    dag_id="securetranscribe_inbox",
    description="Watch the inbox and start one processing run per complete file",
    doc_md=__doc__,
    schedule="@continuous",
    # A past start date matters: without one, Airflow 3.3's continuous timetable gives the second run the
    # logical date of the first (a zero-length first interval) and never creates it.
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    max_active_runs=1,
    catchup=False,
    tags=["securetranscribe", "inbox"],
    default_args={"retries": 2, "retry_delay": timedelta(seconds=5), "priority_weight": 1000},
)
def securetranscribe_inbox() -> None:
    files = InboxSensor(task_id="wait_for_files", inbox=str(SETTINGS.inbox), stable_s=SETTINGS.inbox_stable_s,
                        poll_s=SETTINGS.inbox_poll_s, watch_closes=SETTINGS.inbox_watch_closes,
                        doc_md="Wait, deferred, until complete files are in the inbox.")

    @task
    def claim_files(found: list[dict]) -> list[dict]:
        """Move each complete file into its run's work folder (atomic rename) and prepare one run per file."""
        from tasks.claims import inbox_claims

        return inbox_claims(found)

    TriggerDagRunOperator.partial(
        task_id="start_runs",
        trigger_dag_id="securetranscribe_process",
        logical_date=None,
        skip_when_already_exists=True,
        wait_for_completion=False,
        openlineage_inject_parent_info=False,
        # The file is claimed already: keep trying for about ten minutes. A host that stalls for a minute
        # makes the dag-processor time out parsing and deactivate securetranscribe_process until its next
        # parse (404 "Dag not found" for ~30 s, seen in CI); three tries in 15 s left the claims stranded.
        retries=6,
        retry_delay=timedelta(seconds=10),
        retry_exponential_backoff=2.0,
        max_retry_delay=timedelta(minutes=5),
        doc_md="Start one securetranscribe_process run per claimed file (idempotent per run id; retried for "
               "about ten minutes, as the target DAG can be briefly unknown while it is parsed again).",
    ).expand_kwargs(claim_files(files.output))


securetranscribe_inbox()
