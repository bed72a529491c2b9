"""
### securetranscribe_rename — write every export of one file again with the speaker names saved in the UI

Started by the **Transcripts** view (Airflow UI) when someone names or merges speakers of a transcript
(`SPEAKER_00` → "Diane"), with `{"run_id": "<the file's processing run id>"}`. The names are saved beside the
transcript (`work/<run id>/speakers.json`, with who changed what and when) before this run is queued; this
run re-runs the export stage for each of the file's formats with them — nothing is transcribed again.

- All or nothing: the formats are written into a staging folder and replace the previous files only when
  every one succeeded; a failed run keeps the previous exports (and is retried).
- Serialised: one run at a time (`max_active_runs=1`), and a lock file per transcript.
- The run's note says what changed and who changed it.
"""

from datetime import timedelta
from typing import Any

from airflow.sdk import Param, dag, task


@dag(
    dag_id="securetranscribe_rename",
    description="Re-export one transcript with the speaker names given in the Transcripts view",
    doc_md=__doc__,
    schedule=None,
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=False,
    params={"run_id": Param("", type="string", title="Run id",
                            description="The processing run whose transcript gets the saved names")},
    tags=["securetranscribe", "transcripts"],
    default_args={"retries": 2, "retry_delay": timedelta(seconds=5)},
)
def securetranscribe_rename() -> None:
    @task
    def reexport(**context: Any) -> dict[str, Any]:
        """Every export format of the file again, with the saved speaker names (previous files kept on failure)."""
        from airflow.sdk.exceptions import AirflowFailException

        from tasks.transcripts.runs import NotFound
        from tasks.transcripts.speakers import RenameError, apply_rename

        run_id = context["params"].get("run_id")
        try:
            result = apply_rename(run_id, context["run_id"])
        except NotFound:
            raise AirflowFailException(f"no run folder for run id {run_id!r}") from None
        except RenameError as exc:  # no transcript: retrying cannot help
            raise AirflowFailException(str(exc)) from None
        return {"formats": result["formats"], "files": result["files"]}

    reexport()


securetranscribe_rename()
