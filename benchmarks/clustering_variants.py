"""Clustering variants on long files: the whole diarization (second look included) with another clustering step.

    python benchmarks/clustering_variants.py FILE ... --variant NAME:key=value,... [--json OUT]

Each file's segmentations and window embeddings are computed once (the pipeline's defaults for its length) and
reused by every variant, so a variant costs only its clustering and the second look. Keys of a variant:
``method``, ``threshold``, ``min_cluster_size`` (pyannote's agglomerative clustering, defaults from
:class:`tasks.diarization.DiarizationParams`), or ``algo=spectral`` with ``pval`` (spectral clustering as
in 3D-Speaker: the speaker count, at most 20, from the largest eigengap of the p-pruned affinity's Laplacian,
then k-means).
Every FILE needs an RTTM next to it (``.uem`` used when present); DER at collar 0.25, no speaker hint.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import machine, write_json

MAX_SPEAKERS = 20
"""Spectral clustering: the eigengap is looked for among the first this many eigenvalues."""


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """``NAME:key=value,key=value`` → (NAME, {key: value})."""
    name, _, rest = text.partition(":")
    return name, dict(pair.split("=", 1) for pair in rest.split(",") if pair)


def spectral_labels(embeddings: np.ndarray, pval: float, min_k: int, max_k: int) -> np.ndarray:
    """Spectral clustering of unit embeddings: each row of the cosine affinity keeps its top ``pval`` share
    (at least 6), the number of clusters is the largest eigengap of the Laplacian among the first ``max_k``,
    k-means on its eigenvectors."""
    from scipy.linalg import eigh
    from sklearn.cluster import KMeans

    x = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    n = len(x)
    affinity = x @ x.T
    keep = max(pval, 6 / n)
    for row in affinity:
        row[np.argsort(row)[: int((1 - keep) * n)]] = 0.0
    affinity = 0.5 * (affinity + affinity.T)
    np.fill_diagonal(affinity, 0.0)
    eigenvalues, eigenvectors = eigh(np.diag(np.abs(affinity).sum(axis=1)) - affinity)
    top = min(max_k, n - 1)
    k = int(np.argmax(np.diff(eigenvalues[: top + 1])[min_k - 1:]) + min_k) if top >= min_k else max(1, min_k)
    return KMeans(n_clusters=k, n_init=10, random_state=0).fit_predict(eigenvectors[:, :k])


class CachedClustering:
    """Wraps a loaded pipeline: segmentations and embeddings cached per waveform, the clustering that of
    ``variant`` (a dict the caller updates between runs)."""

    def __init__(self, pipeline: Any, variant: dict[str, str]) -> None:
        self.variant = variant
        self.cache: dict[tuple, Any] = {}
        get_segmentations, get_embeddings = pipeline.get_segmentations, pipeline.get_embeddings
        clustering = pipeline.clustering
        agglomerative = clustering.cluster
        defaults = (clustering.method, clustering.threshold, clustering.min_cluster_size)

        def key(kind: str, file: dict) -> tuple:
            wave = file["waveform"]
            return kind, wave.shape[-1], float(wave[0, ::997].sum())

        def segmentations(file, hook=None):
            k = key("segmentations", file)
            if k not in self.cache:
                self.cache[k] = get_segmentations(file, hook=hook)
            return self.cache[k]

        def embeddings(file, binary_segmentations, exclude_overlap=False, hook=None):
            k = key("embeddings", file)
            if k not in self.cache:
                self.cache[k] = get_embeddings(file, binary_segmentations, exclude_overlap=exclude_overlap, hook=hook)
            return self.cache[k].copy()

        def cluster(train, min_clusters=None, max_clusters=None, num_clusters=None):
            v = self.variant
            if v.get("algo", "agglomerative") == "spectral" and num_clusters is None:
                return spectral_labels(train.copy(), float(v.get("pval", 0.1)), max(1, min_clusters or 1),
                                       min(max_clusters or MAX_SPEAKERS, MAX_SPEAKERS))
            clustering.method = v.get("method", defaults[0])
            clustering.threshold = float(v.get("threshold", defaults[1]))
            clustering.min_cluster_size = int(v.get("min_cluster_size", defaults[2]))
            return agglomerative(train, min_clusters=min_clusters, max_clusters=max_clusters,
                                 num_clusters=num_clusters)

        pipeline.get_segmentations, pipeline.get_embeddings, clustering.cluster = segmentations, embeddings, cluster


def main() -> None:
    from tasks.audio import decode
    from tasks.diarization import pipeline as pipeline_module
    from tasks.evaluation import diarization_scores, read_rttm, read_uem
    from tasks.settings import Settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--variant", action="append", default=[], help="NAME:key=value,... (repeatable)")
    parser.add_argument("--json", type=Path, default=Path("artifacts/clustering_variants.json"))
    args = parser.parse_args()
    variants = [("default", {})] + [parse_variant(v) for v in args.variant]
    settings = Settings.from_env()

    current: dict[str, str] = {}
    wrappers: dict[int, CachedClustering] = {}
    load = pipeline_module.load_pipeline

    def load_wrapped(*args: Any) -> Any:  # whatever pipeline diarize() loads gets the cache and the switch
        pipeline = load(*args)
        if id(pipeline) not in wrappers:
            wrappers[id(pipeline)] = CachedClustering(pipeline, current)
        return pipeline

    pipeline_module.load_pipeline = load_wrapped
    rows: list[dict[str, Any]] = []
    for path in args.files:
        audio = decode(path)
        reference = read_rttm(path.with_suffix(".rttm"))
        for name, variant in variants:
            current.clear()
            current.update(variant)
            t0 = time.perf_counter()
            result = pipeline_module.diarize(audio, settings)
            scores = diarization_scores(reference, result.turns, read_uem(path.with_suffix(".uem")))
            rows.append({"file": str(path), "variant": name, "settings": variant, "der": round(scores["der"], 4),
                         "speakers": scores["hyp_speakers"], "reference_speakers": scores["ref_speakers"],
                         "seconds": round(time.perf_counter() - t0, 1)})
            print(f"{path.parent.name}/{path.stem:14s} {name:14s} DER {scores['der']:.3f}  speakers "
                  f"{scores['hyp_speakers']}/{scores['ref_speakers']}", flush=True)
    print("\nmean DER per variant:")
    for name, _ in variants:
        print(f"  {name:14s} {np.mean([r['der'] for r in rows if r['variant'] == name]):.4f}")
    write_json(args.json, {"machine": machine(), "rows": rows})


if __name__ == "__main__":
    main()
