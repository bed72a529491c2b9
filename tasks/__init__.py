"""SecureTranscribe pipeline library: offline transcription + diarization of audio files.

No Airflow import anywhere in this package, and importing it is cheap (heavy modules load on first
use), so DAG files can import it at parse time. The public surface::

    from tasks import Settings, transcribe_file, Transcript
    transcript = transcribe_file("meeting.flac", Settings.from_env(model="tiny.en"))
"""

from typing import Any

from .errors import (
    AudioTooLong,
    EmptyAudio,
    GpuOutOfMemory,
    InputError,
    InvalidAudio,
    ModelUnavailable,
    SecureTranscribeError,
)
from .settings import Settings  # sets HF_HUB_OFFLINE / PYANNOTE_METRICS_ENABLED before anything else

_LAZY = {
    "transcribe_file": ("pipeline", "transcribe_file"),
    "Transcript": ("result", "Transcript"),
    "Segment": ("result", "Segment"),
    "Word": ("result", "Word"),
    "Turn": ("result", "Turn"),
    "Attempt": ("result", "Attempt"),
}

__all__ = [
    "Attempt", "AudioTooLong", "EmptyAudio", "GpuOutOfMemory", "InputError", "InvalidAudio", "ModelUnavailable",
    "SecureTranscribeError", "Segment", "Settings", "Transcript", "Turn", "Word", "transcribe_file",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
