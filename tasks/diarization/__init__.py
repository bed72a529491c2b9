"""Speaker diarization of whole files (pyannote.audio, offline models)."""

from ..offline import ensure_offline

ensure_offline()  # before any submodule imports pyannote (embedding.py does at module level)

from .pipeline import DEFAULT_PARAMS, Diarization, DiarizationParams, diarize  # noqa: E402

__all__ = ["DEFAULT_PARAMS", "Diarization", "DiarizationParams", "diarize"]
