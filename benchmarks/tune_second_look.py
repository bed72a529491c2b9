"""How ``refine_margin`` and ``split_distance`` (the diarization's second look) were chosen, with leave-one-file-out.

    python benchmarks/tune_second_look.py [PATH ...] [--margins 0.1,0.15,0.2,0.3] [--key refine_margin]
                                          [--held-out PATH ...] [--build-dir DIR] [--json artifacts/second_look.json]

``--margins`` are the values tried for ``--key`` (a ``DiarizationParams`` field of the second look:
``refine_margin`` by default, or ``split_distance``; a value above 1 turns that part off).

PATH as in ``evaluate.py`` (``built``, ``long-meeting``, folders, files; default: the corpus's AMI excerpts,
the pyannote sample and the built multi-speaker files). Each file is diarized once with the second look off;
the second look is then applied with each margin to the same turns (it only moves whole turns, so this is
exactly what the pipeline does). DER: collar 0.25, UEM where given, no speaker-count hint. Printed:

- per file and margin, DER and the number of turns moved; ``off`` is the pipeline without the second look;
- ``best``: the margin with the lowest mean DER over all tuning files (optimistic);
- ``LOO``: for each file, the margin best on the *other* files, scored on it (honest);
- ``--held-out`` files (e.g. the 20-minute meetings) are never used to choose: scored with the chosen margin.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    PYANNOTE_SAMPLE,
    default_corpus,
    discover,
    display_name,
    expand_built,
    machine,
    parse_params,
    write_json,
)

OFF = "off"


def diarize_off(item: Any, settings: Any, base: Any) -> tuple[Any, Any]:
    """The audio and the diarization of one file without the second look."""
    from tasks.audio import decode
    from tasks.diarization import diarize

    audio = decode(item.audio)
    return audio, diarize(audio, settings, params=dataclasses.replace(base, refine_margin=2.0))


def score_margins(item: Any, audio: Any, result: Any, margins: list[float], base: Any,
                  key: str = "refine_margin") -> dict[str, dict[str, Any]]:
    """DER per margin (and ``off``) of one file, from one diarization."""
    from tasks.diarization.pipeline import load_pipeline, second_look
    from tasks.evaluation import diarization_scores, read_rttm, read_uem
    from tasks.settings import Settings

    settings = Settings.from_env()
    model = load_pipeline(str(settings.models_dir), None, result.device,
                          dataclasses.replace(base, refine_margin=2.0))._windows_model
    reference = read_rttm(item.rttm)
    uem = read_uem(item.uem) if item.uem else None
    out = {OFF: {"der": diarization_scores(reference, result.turns, uem=uem, collar=0.25)["der"], "moved": 0}}
    for m in margins:
        t0 = time.perf_counter()
        turns, _, moves = second_look(audio, result.turns, result.exclusive, model,
                                       dataclasses.replace(base, **{key: m}).for_duration(len(audio) / 16000))
        out[f"{m:g}"] = {"der": diarization_scores(reference, turns, uem=uem, collar=0.25)["der"],
                         "moved": len(moves), "seconds": round(time.perf_counter() - t0, 2)}
    return out


def choose(rows: dict[str, dict[str, dict[str, Any]]], keys: list[str], without: str | None = None) -> str:
    """The key with the lowest mean DER over the files (but ``without``); ties go to the earlier key."""
    names = [n for n in rows if n != without]
    return min(keys, key=lambda k: statistics.mean(rows[n][k]["der"] for n in names))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="*")
    ap.add_argument("--margins", default="0.1,0.15,0.2,0.3")
    ap.add_argument("--key", default="refine_margin",
                    help="the DiarizationParams field of the second look that --margins sweeps (e.g. split_distance)")
    ap.add_argument("--held-out", nargs="*", default=[])
    ap.add_argument("--build-dir", type=Path)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                    help="another DiarizationParams field for every margin, e.g. refine_max_embed_s=4")
    args = ap.parse_args(argv)

    from tasks.settings import Settings

    settings = Settings.from_env()
    margins = [float(m) for m in args.margins.split(",")]
    base = parse_params(args.param)
    keys = [OFF] + [f"{m:g}" for m in margins]
    paths = args.paths or [str(default_corpus() / "ami"), PYANNOTE_SAMPLE, "built"]
    tuning = [it for it in discover(expand_built(paths, args.build_dir)) if it.rttm]
    held = [it for it in discover(expand_built(args.held_out, args.build_dir)) if it.rttm]

    rows: dict[str, dict[str, dict[str, Any]]] = {}
    held_rows: dict[str, dict[str, dict[str, Any]]] = {}
    steps: dict[str, dict[str, float]] = {}
    for items, into in ((tuning, rows), (held, held_rows)):
        for item in items:
            audio, result = diarize_off(item, settings, base)
            name = display_name(item.audio)
            into[name] = score_margins(item, audio, result, margins, base, args.key)
            steps[name] = result.timings
            print(name, {k: round(v["der"], 3) for k, v in into[name].items()},
                  "diarization steps (s):", result.timings, flush=True)

    best = choose(rows, keys)
    loo = {n: choose(rows, keys, without=n) for n in rows}
    print(f"\n{'file':38s} " + " ".join(f"{k:>12s}" for k in keys) + "   LOO pick  LOO DER")
    for n, r in rows.items():
        cells = " ".join(f"{r[k]['der']:7.3f} ({r[k]['moved']:2d})" for k in keys)
        print(f"{n[:38]:38s} {cells}   {loo[n]:>8s}  {r[loo[n]]['der']:.3f}")
    means = {k: statistics.mean(r[k]["der"] for r in rows.values()) for k in keys}
    loo_mean = statistics.mean(r[loo[n]]["der"] for n, r in rows.items())
    print(f"{'mean':38s} " + " ".join(f"{means[k]:12.3f}" for k in keys) + f"   LOO mean {loo_mean:.3f}")
    print(f"best margin on all tuning files: {best} (mean DER {means[best]:.3f}; off {means[OFF]:.3f})")
    for n, r in held_rows.items():
        print(f"held out {n}: off {r[OFF]['der']:.3f} → {best} {r[best]['der']:.3f} ({r[best]['moved']} moved)")
    if args.json:
        write_json(args.json, {"command": " ".join(sys.argv), "machine": machine(), "margins": margins,
                               "params": args.param, "files": rows, "held_out": held_rows, "best": best, "means": means,
                               "loo": loo, "loo_mean": loo_mean, "steps": steps})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
