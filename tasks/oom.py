"""What to do after a CUDA out-of-memory: halve the batch, then the chunk length, down to floors, then CPU.

One rule, :meth:`ShrinkPolicy.next`, for transcription (:class:`RunState`: one batch size, a chunk
length) and diarization (two batch sizes, no chunk length: the file is diarized whole). The state is a
small serialisable record, so an Airflow retry in a new process continues where the previous try left
off. Fault injection (``SECURETRANSCRIBE_FAULT_OOM_ABOVE_S``) raises a real
:class:`~tasks.errors.GpuOutOfMemory` so the whole path runs on machines without a GPU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar, Protocol, TypeVar

from .errors import GpuOutOfMemory


@dataclass(frozen=True)
class RunState:
    """How the next chunk will run."""

    batch_fields: ClassVar[tuple[str, ...]] = ("batch_size",)

    device: str
    compute_type: str
    chunk_s: float
    batch_size: int
    cpu_fallback: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunState:
        return cls(**data)


class Shrinkable(Protocol):
    """A frozen dataclass state :class:`ShrinkPolicy` can step: batch size fields, an optional chunk length."""

    batch_fields: ClassVar[tuple[str, ...]]
    """Names of the batch size fields, halved together."""

    @property
    def device(self) -> str: ...

    @property
    def compute_type(self) -> str: ...

    @property
    def chunk_s(self) -> float | None: ...

    @property
    def cpu_fallback(self) -> bool: ...


S = TypeVar("S", bound=Shrinkable)


@dataclass(frozen=True)
class ShrinkPolicy:
    """Halve the batch size(s) to ``min_batch_size``, then the chunk length to ``min_chunk_s``, then CPU."""

    min_chunk_s: float = 60.0
    min_batch_size: int = 1
    cpu_compute_type: str = "int8"

    def next(self, state: S) -> S | None:
        """The state to try after an OOM in ``state``; None when nothing is left (already on CPU)."""
        if state.cpu_fallback:
            return None
        batches = {name: getattr(state, name) for name in state.batch_fields}
        if any(size > self.min_batch_size for size in batches.values()):
            return replace(state, **{name: self._halved(size) for name, size in batches.items()})
        if state.chunk_s is not None and state.chunk_s > self.min_chunk_s + 1e-6:
            return replace(state, chunk_s=max(self.min_chunk_s, state.chunk_s / 2))
        return replace(state, device="cpu", compute_type=self.cpu_compute_type, cpu_fallback=True)

    def _halved(self, size: int) -> int:
        return max(self.min_batch_size, size // 2) if size > self.min_batch_size else size


def inject_fault(duration_s: float, state: RunState, oom_above_s: float | None) -> None:
    """Raise an injected GpuOutOfMemory for work longer than ``oom_above_s`` before CPU fallback."""
    if oom_above_s is not None and not state.cpu_fallback and duration_s > oom_above_s:
        raise GpuOutOfMemory(
            f"injected CUDA out of memory: {duration_s:.1f} s of audio > {oom_above_s:g} s "
            "(SECURETRANSCRIBE_FAULT_OOM_ABOVE_S)",
            injected=True,
        )


def release_gpu_memory() -> None:
    """Give cached CUDA blocks back after an OOM (no-op without torch/CUDA)."""
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
