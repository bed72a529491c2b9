"""The batched first pass with Whisper's timestamp tokens vs without (faster-whisper's batched default).

    .venv/bin/python benchmarks/first_pass_timestamps.py [--model base] [--build-dir DIR]
        [--json artifacts/first_pass_timestamps.json] [built held-out | files with an .stm ...]

An experiment, not a setting: ``BatchedInferencePipeline.transcribe`` decodes each ≤ 30-s group with
``without_timestamps=True`` unless told otherwise; this runs the library's transcription (chunk plan, first
pass, second pass) over each file once as it is and once with ``without_timestamps=False`` in every batched
call, and reports the WER of the text against the file's STM and the time of each. No diarization.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import expand_built, machine, write_json

from tasks.audio import decode
from tasks.chunking import ChunkPlan, make_plan
from tasks.evaluation import read_stm, word_errors
from tasks.settings import Settings
from tasks.transcription import transcribe_plan


def _run(audio: np.ndarray, plan: ChunkPlan, reference: str, settings: Settings, timestamps: bool) -> dict[str, Any]:
    from faster_whisper import BatchedInferencePipeline

    original = BatchedInferencePipeline.transcribe

    def with_timestamps(self: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("without_timestamps", False)
        return original(self, *args, **kwargs)

    if timestamps:
        BatchedInferencePipeline.transcribe = with_timestamps  # type: ignore[method-assign]
    try:
        t0 = time.perf_counter()
        run = transcribe_plan(audio, plan, settings)
        seconds = time.perf_counter() - t0
    finally:
        BatchedInferencePipeline.transcribe = original  # type: ignore[method-assign]
    text = " ".join(s.text for s in run.segments)
    return {"wer": round(word_errors(reference, text).rate, 4), "seconds": round(seconds, 2),
            "segments": len(run.segments), "text": text}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", default=["built", "held-out"])
    parser.add_argument("--model", default="base")
    parser.add_argument("--build-dir", type=Path, help="where 'built' and 'held-out' are written")
    parser.add_argument("--json", type=Path, default=Path("artifacts/first_pass_timestamps.json"))
    args = parser.parse_args()
    settings = Settings.from_env(model=args.model)
    rows = []
    for name in expand_built(args.paths, args.build_dir):
        path = Path(name)
        if not path.with_suffix(".stm").is_file():
            raise SystemExit(f"{path}: no .stm reference beside it (the WER needs one)")
        audio = decode(path)  # decoded and planned once; both runs get the same plan
        plan = make_plan(audio, settings)
        reference = " ".join(u.text for u in read_stm(path.with_suffix(".stm")))
        row = {"file": path.name, **{name: _run(audio, plan, reference, settings, timestamps)
                                     for name, timestamps in (("text_only", False), ("timestamps", True))}}
        rows.append(row)
        print(f"{path.name:20s} WER text-only {row['text_only']['wer']:.3f} ({row['text_only']['seconds']:.1f} s)"
              f"  timestamps {row['timestamps']['wer']:.3f} ({row['timestamps']['seconds']:.1f} s)", flush=True)
    write_json(args.json, {"command": "first_pass_timestamps.py", "machine": machine(), "model": args.model,
                           "files": rows})
    print(f"JSON: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
