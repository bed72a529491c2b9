"""Per-chunk transcription checkpoints in a run's work folder, written atomically.

Layout: ``<folder>/chunk-00007.json`` per finished chunk, ``<folder>/state.json`` for the OOM state and
the attempts so far. Chunks are contiguous from the start of the file; a retry resumes at the end of
the last one. The engine (:func:`tasks.transcription.iter_chunks`) only yields events; the stage
persists them with :meth:`ChunkCheckpoint.record` and starts a retry from :meth:`ChunkCheckpoint.resume`.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from .files import atomic_write_json, ensure_dir
from .oom import RunState
from .result import Attempt, ChunkEvent, ChunkResult, Resume


class ChunkCheckpoint:
    """Durable progress of one file's transcription."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = ensure_dir(folder)

    def resume(self) -> Resume:
        """Where an earlier try left off: the contiguous finished chunks, the state and the attempts."""
        return Resume(chunks=self.load_chunks(), state=self.load_state(), attempts=self.load_attempts())

    def record(self, event: ChunkEvent) -> None:
        """Persist one event of :func:`tasks.transcription.iter_chunks`: the chunk if any, then the state."""
        if event.chunk is not None:
            self.save_chunk(event.chunk)
        self.save_state(event.state, event.attempts)

    def save_chunk(self, chunk: ChunkResult) -> None:
        atomic_write_json(self.folder / f"chunk-{chunk.index:05d}.json", chunk.to_dict())

    def load_chunks(self) -> list[ChunkResult]:
        """Finished chunks in order, stopping at the first gap or unreadable file."""
        chunks: list[ChunkResult] = []
        for path in sorted(self.folder.glob("chunk-*.json")):
            try:
                chunk = ChunkResult.from_dict(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, KeyError, TypeError):
                break
            expected_start = chunks[-1].end if chunks else 0.0
            if chunk.index != len(chunks) or abs(chunk.start - expected_start) > 1e-3:
                break
            chunks.append(chunk)
        return chunks

    def save_state(self, state: RunState, attempts: list[Attempt]) -> None:
        atomic_write_json(self.folder / "state.json",
                          {"state": state.to_dict(), "attempts": [asdict(a) for a in attempts]})

    def _state_file(self) -> dict:
        path = self.folder / "state.json"
        if not path.is_file():
            return {}
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def load_state(self) -> RunState | None:
        data = self._state_file().get("state")
        return RunState.from_dict(data) if data else None

    def load_attempts(self) -> list[Attempt]:
        return [Attempt(**a) for a in self._state_file().get("attempts", [])]

    def clear(self) -> None:
        for path in self.folder.glob("chunk-*.json"):
            path.unlink()
        (self.folder / "state.json").unlink(missing_ok=True)
