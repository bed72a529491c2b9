"""SecureTranscribe pipeline library: offline transcription + diarization of audio files.

No Airflow import anywhere in this package. The public surface::

    from tasks import Settings, transcribe_file, Transcript
    transcript = transcribe_file("meeting.flac", Settings.from_env(model="tiny.en"))
"""

from .errors import (
    AudioTooLong,
    EmptyAudio,
    GpuOutOfMemory,
    InputError,
    InvalidAudio,
    ModelUnavailable,
    SecureTranscribeError,
)
from .pipeline import transcribe_file
from .result import Attempt, Segment, Transcript, Turn, Word
from .settings import Settings  # first: sets HF_HUB_OFFLINE / PYANNOTE_METRICS_ENABLED

__all__ = [
    "Attempt", "AudioTooLong", "EmptyAudio", "GpuOutOfMemory", "InputError", "InvalidAudio", "ModelUnavailable",
    "SecureTranscribeError", "Segment", "Settings", "Transcript", "Turn", "Word", "transcribe_file",
]
