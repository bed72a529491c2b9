"""Device and compute-type selection: cuda, then mps where the engine supports it, then cpu."""

from __future__ import annotations

import functools
import os


@functools.lru_cache(maxsize=1)
def cuda_device_count() -> int:
    """GPUs CTranslate2 can use (0 without CUDA). Cheap: does not import torch."""
    try:
        import ctranslate2

        return int(ctranslate2.get_cuda_device_count())
    except Exception:
        return 0


def cuda_capability(index: int = 0) -> tuple[int, int] | None:
    try:
        import torch

        if torch.cuda.is_available():
            return tuple(torch.cuda.get_device_capability(index))  # type: ignore[return-value]
    except Exception:
        return None
    return None


def whisper_device(requested: str = "auto") -> str:
    """Device for CTranslate2 (faster-whisper): it has no MPS backend, so cuda or cpu."""
    requested = (requested or "auto").lower()
    if requested == "auto":
        return "cuda" if cuda_device_count() > 0 else "cpu"
    if requested == "mps":
        return "cpu"
    return requested


def split_device(device: str) -> tuple[str, int]:
    """``cuda:1`` -> ("cuda", 1)."""
    kind, _, index = device.partition(":")
    return kind, int(index or 0)


def whisper_compute_type(device: str, requested: str = "auto") -> str:
    """float16 on CUDA with compute capability >= 7.0, int8_float32 on older CUDA, int8 on CPU."""
    requested = (requested or "auto").lower()
    if requested != "auto":
        return requested
    kind, index = split_device(device)
    if kind == "cuda":
        cap = cuda_capability(index)
        return "float16" if cap is None or cap >= (7, 0) else "int8_float32"
    return "int8"


def torch_device(requested: str = "auto") -> str:
    """Device for torch models (pyannote): cuda, then mps, then cpu."""
    requested = (requested or "auto").lower()
    if requested != "auto":
        return requested
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def usable_cores() -> int:
    """The cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def heavy_task_slots(requested: int = 0, gpus: int | None = None, cores: int | None = None) -> int:
    """How many transcribe/diarize tasks run at once: one per GPU; without a GPU ``requested``, else
    a quarter of the cores, at least 2 (two files overlap their single-threaded parts) and at most all cores."""
    gpus = cuda_device_count() if gpus is None else gpus
    if gpus > 0:
        return gpus
    if requested > 0:
        return requested
    cores = usable_cores() if cores is None else cores
    return min(cores, max(2, cores // 4))


def cpu_threads(requested: int = 0, share: int = 1) -> int:
    """Threads for CPU inference: the requested number, else the usable cores split ``share`` ways."""
    if requested > 0:
        return requested
    return max(1, usable_cores() // max(1, share))
