"""The Transcripts view's library: the full-text index (``index``), a run's records as the view reads them
(``runs``), speaker names given after a run and the re-export they cause (``speakers``), the web app (``web``).
No Airflow import: the plugin (``plugins/securetranscribe_transcripts.py``) supplies login and DAG triggering.
"""

from .index import TranscriptIndex, index_transcript, rebuild

__all__ = ["TranscriptIndex", "index_transcript", "rebuild"]
