"""
### securetranscribe_on_transcript — an example DAG that runs for every new transcript

Not loaded by default (it lives outside `dags/`). To use it, copy it into your DAGs folder, or add this
folder as a DAG bundle:

    AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST='[
      {"name": "dags-folder", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle", "kwargs": {}},
      {"name": "examples", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
       "kwargs": {"path": "/path/to/securetranscribe/docs/examples"}}]'

Every file that SecureTranscribe archives (the processing DAGs' `finalize` task) emits one event of the
asset `securetranscribe/transcripts`; files that were quarantined, failed an export or were already done
emit nothing. The event's extras:

| key | value |
|---|---|
| `run_id` | the processing run (`file__jfk__…`) |
| `file`, `stem`, `sha256` | the original's name, the output name, its content hash |
| `out_dir`, `outputs` | the output folder and `{"txt": ["…/jfk.txt"], "json": […], …}` (absolute paths) |
| `archived` | where the original is now |
| `language`, `duration` | ISO code, seconds |
| `speakers`, `speaker_names` | `["SPEAKER_00", …]` and the names given for the run |

Replace `summarise` with your own work (an index, a summary by a local model, a notification).
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import Asset, dag, task

TRANSCRIPTS = Asset("securetranscribe/transcripts")
log = logging.getLogger(__name__)


@dag(
    dag_id="securetranscribe_on_transcript",
    description="Example: runs for every new SecureTranscribe transcript (asset securetranscribe/transcripts)",
    doc_md=__doc__,
    schedule=[TRANSCRIPTS],
    catchup=False,
    tags=["securetranscribe", "example"],
)
def securetranscribe_on_transcript() -> None:
    @task
    def summarise(**context: Any) -> list[dict[str, Any]]:
        """One line per new transcript in the log; the extras as this task's XCom (names, never text)."""
        seen = []
        for event in context["triggering_asset_events"][TRANSCRIPTS]:
            extra = dict(event.extra)
            log.info("new transcript of %s (run %s): %s, %.0f s, %d speaker(s); TXT: %s", extra.get("file"),
                     extra.get("run_id"), extra.get("language"), extra.get("duration") or 0,
                     len(extra.get("speakers") or []), (extra.get("outputs") or {}).get("txt"))
            seen.append(extra)
        return seen

    summarise()


securetranscribe_on_transcript()
