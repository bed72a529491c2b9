"""What one Whisper encoder pass costs by context length (why the second pass pads to its own audio).

    .venv/bin/python benchmarks/encoder_context.py [--model base] [--seconds 5 10 20 30] [--repeats 3]
        [--json artifacts/encoder_context.json]

Loads the model as the pipeline does (CPU, int8, every core), makes the features of the first 30 s of an AMI
excerpt, and times ``model.model.encode`` on the first N seconds of them (the first call of each length is
a warm-up and is not counted).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from common import default_corpus, machine, write_json

from tasks.audio import SAMPLE_RATE, decode
from tasks.devices import cpu_threads
from tasks.settings import Settings
from tasks.transcription import load_model, resolve_model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="base")
    parser.add_argument("--seconds", type=float, nargs="+", default=[5, 10, 20, 30])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=Path("artifacts/encoder_context.json"))
    args = parser.parse_args()
    import ctranslate2

    settings = Settings.from_env()
    threads = cpu_threads(settings.cpu_threads)
    model = load_model(resolve_model(args.model, settings.models_dir), "cpu", "int8", threads)
    audio = decode(default_corpus() / "ami" / "dev00.flac")[: 30 * SAMPLE_RATE]
    features = model.feature_extractor(audio)
    rows = []
    for seconds in args.seconds:
        frames = int(seconds * 100)
        x = ctranslate2.StorageView.from_array(np.ascontiguousarray(features[None, :, :frames], dtype=np.float32))
        model.model.encode(x, to_cpu=False)  # warm-up
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            model.model.encode(x, to_cpu=False)
            times.append(round(time.perf_counter() - t0, 3))
        rows.append({"seconds": seconds, "encode_s": times, "median_s": float(np.median(times))})
        print(f"{seconds:5.1f} s of features: encode {np.median(times):.3f} s (median of {times})", flush=True)
    write_json(args.json, {"machine": machine(), "model": args.model, "threads": threads, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
