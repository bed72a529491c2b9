"""
### securetranscribe_process — one run per audio file (an Airflow DAG)

Started by `securetranscribe_inbox` for every file dropped into the inbox (or by hand with
`{"path": "/path/to/file.flac"}`), this DAG runs the whole pipeline for one file:

claim → probe → plan chunks → **transcribe** (pool `gpu`) → **diarize** (pool `gpu`) → merge →
exports (one task per format) → finalize.

- Outputs: `$SECURETRANSCRIBE_HOME/outbox/<stem>/<stem>.<format>`.
- Success: the original moves to `archive/YYYY/MM/DD/`. Failure: it moves to `quarantine/<run id>/`
  with a `reason.json`, and the run fails.
- The run's note names the file and, once it ends, its outcome or the quarantine reason in one line. A run
  triggered here without a run id is named `file__<name>__manual_…`. Each archived file emits an event of
  the asset `securetranscribe/transcripts` (run id, file, outputs, language, duration, speakers).
- Conf: `path`, and any per-run option (`model`, `language`, `formats`, `num_speakers`, `min_speakers`,
  `max_speakers`, `hotwords`, `initial_prompt`, `multilingual`, `diarize`, `speaker_names`, `csv_bom`,
  `csv_formula_guard`, `reprocess`); unset options take the settings' values.
"""

from securetranscribe_lib.processing import build_processing_dag

securetranscribe_process = build_processing_dag(
    "securetranscribe_process",
    priority_weight=100,
    description="Transcribe and diarize one file (interactive priority)",
    doc_md=__doc__,
    tags=["securetranscribe", "transcription"],
)
