"""Typed errors with human messages. Input errors mean "quarantine the file"; others may be retried."""

from __future__ import annotations


class SecureTranscribeError(Exception):
    """Base class of every error this library raises on purpose."""

    #: short machine-readable kind, written to reason files and metrics rows
    kind = "error"


class InputError(SecureTranscribeError):
    """The input itself is unusable: retrying cannot help; the file goes to quarantine."""

    kind = "input"


class InvalidAudio(InputError):
    """Not decodable as audio: not a media file, no audio track, corrupt or truncated data."""

    kind = "invalid_audio"


class EmptyAudio(InputError):
    """A file with no audio samples at all (zero bytes, or an empty stream)."""

    kind = "empty_audio"


class AudioTooLong(InputError):
    """Longer than the configured maximum duration."""

    kind = "too_long"


class UnsafeInput(InputError):
    """Refused for safety: a symlink leaving the inbox, a path escaping its folder."""

    kind = "unsafe_input"


class ModelUnavailable(SecureTranscribeError):
    """A model is not on disk (set-up not run, wrong path) and will not be downloaded."""

    kind = "model_unavailable"


class GpuOutOfMemory(SecureTranscribeError):
    """CUDA ran out of memory (torch or CTranslate2), or the fault-injection setting said so."""

    kind = "gpu_oom"

    def __init__(self, message: str, *, injected: bool = False) -> None:
        super().__init__(message)
        self.injected = injected


class ShrinkExhausted(SecureTranscribeError):
    """The out-of-memory policy has nothing left to try (already on CPU at the floor)."""

    kind = "oom_exhausted"


def is_cuda_oom(exc: BaseException) -> bool:
    """True for torch's ``OutOfMemoryError`` and CTranslate2's "CUDA out of memory" RuntimeError.

    Also for a ``MemoryError`` raised while handling one: pyannote's segmentation inference turns a CUDA OOM
    into ``MemoryError("batch_size (32) is probably too large …")``, the original being its ``__context__``.
    """
    if _is_cuda_oom_itself(exc):
        return True
    if isinstance(exc, MemoryError):
        inner = exc.__cause__ or exc.__context__
        return inner is not None and inner is not exc and _is_cuda_oom_itself(inner)
    return False


def _is_cuda_oom_itself(exc: BaseException) -> bool:
    if isinstance(exc, GpuOutOfMemory):
        return True
    if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError, without importing torch
        return True
    if isinstance(exc, (RuntimeError, MemoryError)):
        text = str(exc).lower()
        if "alloc_failed" in text and ("cublas" in text or "cudnn" in text):  # e.g. CUBLAS_STATUS_ALLOC_FAILED
            return True
        return "out of memory" in text and ("cuda" in text or "cublas" in text or "cudnn" in text)
    return False


def as_gpu_oom(exc: BaseException) -> GpuOutOfMemory | None:
    """The typed error for a CUDA OOM, or None when ``exc`` is something else."""
    if isinstance(exc, GpuOutOfMemory):
        return exc
    if is_cuda_oom(exc):
        return GpuOutOfMemory(f"CUDA out of memory: {str(exc).splitlines()[0][:300]}")
    return None
