"""Speaker diarization of whole files (pyannote.audio, offline models)."""

from .pipeline import DEFAULT_PARAMS, Diarization, DiarizationParams, diarize

__all__ = ["DEFAULT_PARAMS", "Diarization", "DiarizationParams", "diarize"]
