"""
### securetranscribe_process_batch — one run per archive file, at batch priority (an Airflow DAG)

The same per-file processing as `securetranscribe_process` (the same DAG factory, the same tasks), started
by `securetranscribe_archive` for every recording of a backfilled partition:

claim → probe → plan chunks → **transcribe** (pool `gpu`) → **diarize** (pool `gpu`) → merge →
exports (one task per format) → finalize.

- Priority: its tasks have priority weight 1 against 100 for inbox files, so with the `gpu` pool full an
  inbox file's GPU work goes first; at most `$SECURETRANSCRIBE_BACKFILL_MAX_ACTIVE_RUNS` files at once.
- The archive's file is **copied** into the run's work folder and never moved or modified; the copy is
  dropped at the end. Outputs: `$SECURETRANSCRIBE_HOME/outbox/<stem>/`, like inbox files.
- Content already processed with the same model and options is skipped (outcome `duplicate`), unless
  the conf says `"reprocess": true`.
"""

from securetranscribe_lib.processing import build_processing_dag

from tasks.settings import Settings

securetranscribe_process_batch = build_processing_dag(
    "securetranscribe_process_batch",
    priority_weight=1,
    description="Transcribe and diarize one archive file (batch priority)",
    doc_md=__doc__,
    tags=["securetranscribe", "transcription", "archive"],
    max_active_runs=Settings.from_env().backfill_max_active_runs,
)
