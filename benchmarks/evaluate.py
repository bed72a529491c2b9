"""Quality benchmark: the library pipeline over a folder of audio + references.

    python benchmarks/evaluate.py [PATH ...] [--model tiny.en] [--no-transcribe] [--json OUT]

PATH: folders (searched recursively), audio files, or ``pyannote-sample``; default: the shared corpus
and the pyannote sample. Every audio file with a reference next to it (same stem) is scored:

- ``.rttm`` (+ ``.uem`` when present): DER and JER (pyannote.metrics) at each collar (0 and 0.25 s),
  speaker-count error. No speaker-count hint unless ``--oracle-speakers``.
- ``.txt``: WER (jiwer, Whisper-style normalisation). Lines of ``label<TAB>text`` are also a
  speaker-attributed reference.
- ``.stm``: WER, and speaker-attributed WER (cpWER) when diarization runs too.

Prints a table and writes all numbers, the settings and the machine to a JSON file.
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
    ROOT,
    Item,
    default_corpus,
    discover,
    machine,
    parse_params,
    peak_rss_mb,
    write_json,
)


def evaluate_item(item: Item, settings: Any, params: Any, *, transcribe: bool, collars: list[float],
                  oracle_speakers: bool = False) -> dict[str, Any]:
    """Run the pipeline stages on one file and score every reference it has."""
    from tasks.assemble import relabel_speakers
    from tasks.audio import decode
    from tasks.chunking import make_plan
    from tasks.diarization import diarize
    from tasks.evaluation import (
        cp_wer,
        diarization_scores,
        read_rttm,
        read_stm,
        read_text_reference,
        read_uem,
        speaker_texts,
        word_errors,
    )
    from tasks.transcription import transcribe_plan

    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    audio = decode(item.audio)
    seconds["decode"] = time.perf_counter() - t0
    duration = len(audio) / 16000
    out: dict[str, Any] = {"file": _display(item.audio), "duration": round(duration, 2)}

    reference_turns = read_rttm(item.rttm) if item.rttm else None
    ref_text, ref_speakers = None, None
    if item.stm:
        utterances = read_stm(item.stm)
        ref_speakers = speaker_texts(utterances)
        ref_text = " ".join(u.text for u in utterances)
    elif item.txt:
        ref_text, ref_speakers = read_text_reference(item.txt)

    turns = None
    if settings.diarize and (reference_turns is not None or (transcribe and ref_speakers)):
        hint = {"num_speakers": len({t.speaker for t in reference_turns})} if (
            oracle_speakers and reference_turns) else {}
        t0 = time.perf_counter()
        result = diarize(audio, settings, params=params, **hint)
        seconds["diarize"] = time.perf_counter() - t0
        mapping = relabel_speakers(result.turns)
        turns = [dataclasses.replace(t, speaker=mapping[t.speaker]) for t in result.turns]
        exclusive = [dataclasses.replace(t, speaker=mapping[t.speaker]) for t in result.exclusive]
        out["hyp_speakers"] = len(mapping)

    if reference_turns is not None and turns is not None:
        uem = read_uem(item.uem) if item.uem else None
        scores = {f"{c:g}": diarization_scores(reference_turns, turns, uem=uem, collar=c) for c in collars}
        first = next(iter(scores.values()))
        out.update(ref_speakers=first["ref_speakers"], speaker_count_error=first["speaker_count_error"],
                   diarization=scores, uem=bool(uem))

    if transcribe and ref_text is not None:
        from tasks.merge import merge

        t0 = time.perf_counter()
        plan = make_plan(audio, settings)
        run = transcribe_plan(audio, plan, settings)
        seconds["transcribe"] = time.perf_counter() - t0
        hyp_text = " ".join(s.text for s in run.segments)
        errors = word_errors(ref_text, hyp_text)
        out["wer"] = errors.rate
        out["word_errors"] = dataclasses.asdict(errors)
        if ref_speakers and turns is not None:
            by_speaker: dict[str, list[str]] = {}
            for seg in merge(run.segments, exclusive or turns):
                for w in seg.words:
                    by_speaker.setdefault(w.speaker or "?", []).append(w.text)
            cp = cp_wer(ref_speakers, {k: "".join(v) for k, v in by_speaker.items()})
            out["cpwer"] = cp["cpwer"]
            out["cpwer_mapping"] = cp["mapping"]
    out["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
    return out


def _display(path: Path) -> str:
    if path.parent.name == "sample" and path.parent.parent.name == "audio":  # inside the pyannote.audio wheel
        return f"{PYANNOTE_SAMPLE}/{path.name}"
    corpus = default_corpus()
    for base in (corpus, ROOT):
        try:
            return str(path.relative_to(base))
        except ValueError:
            continue
    return str(path)


def summarise(rows: list[dict[str, Any]], collar: str = "0.25") -> dict[str, Any]:
    """Mean, spread and speaker-count accuracy of the scored files, overall and per folder."""
    def block(selected: list[dict[str, Any]]) -> dict[str, Any]:
        ders = [r["diarization"][collar]["der"] for r in selected if "diarization" in r]
        jers = [r["diarization"][collar]["jer"] for r in selected if "diarization" in r]
        ders0 = [r["diarization"]["0"]["der"] for r in selected if "diarization" in r and "0" in r["diarization"]]
        wers = [r["wer"] for r in selected if "wer" in r]
        out: dict[str, Any] = {"files": len(selected)}
        if ders:
            out.update(der_mean=statistics.fmean(ders), der_std=statistics.pstdev(ders), der_min=min(ders),
                       der_max=max(ders), der_median=statistics.median(ders), jer_mean=statistics.fmean(jers),
                       speaker_count_right=sum(r["speaker_count_error"] == 0 for r in selected if "diarization" in r),
                       diarized_files=len(ders))
        if ders0:
            out["der_collar0_mean"] = statistics.fmean(ders0)
        if wers:
            out["wer_mean"] = statistics.fmean(wers)
        return out

    scored = [r for r in rows if "diarization" in r]
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in scored:
        groups.setdefault(r["file"].split("/")[0] if "/" in r["file"] else ".", []).append(r)
    return {"all_rttm": block(scored), **{g: block(rs) for g, rs in groups.items()}}


def print_table(rows: list[dict[str, Any]], summary: dict[str, Any], collars: list[float]) -> None:
    keys = [f"{c:g}" for c in collars]
    head = f"{'file':34s} {'dur':>5s} {'spk':>5s} " + " ".join(f"{'DER@' + k:>8s}" for k in keys) + \
        " " + " ".join(f"{'JER@' + k:>8s}" for k in keys) + f" {'WER':>6s} {'cpWER':>6s} {'sec':>6s}"
    print(head)
    print("-" * len(head))

    def fmt(v: float | None, width: int = 8) -> str:
        return f"{v:{width}.3f}" if v is not None else " " * (width - 1) + "-"

    for r in rows:
        d = r.get("diarization", {})
        spk = f"{r.get('ref_speakers', '-')}/{r.get('hyp_speakers', '-')}"
        print(f"{r['file'][:34]:34s} {r['duration']:5.0f} {spk:>5s} "
              + " ".join(fmt(d.get(k, {}).get("der")) for k in keys) + " "
              + " ".join(fmt(d.get(k, {}).get("jer")) for k in keys)
              + f" {fmt(r.get('wer'), 6)} {fmt(r.get('cpwer'), 6)} {sum(r['seconds'].values()):6.1f}")
    print()
    for name, s in summary.items():
        if "der_mean" in s:
            print(f"{name:10s} DER@{keys[-1]} mean {s['der_mean']:.3f} (std {s['der_std']:.3f}, median "
                  f"{s['der_median']:.3f}, min {s['der_min']:.3f}, max {s['der_max']:.3f})  JER mean "
                  f"{s['jer_mean']:.3f}  speaker count right {s['speaker_count_right']}/{s['diarized_files']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", help=f"folders, audio files or '{PYANNOTE_SAMPLE}' "
                        "(default: the shared corpus and the pyannote sample)")
    parser.add_argument("--model", default="tiny.en", help="Whisper model (default tiny.en)")
    parser.add_argument("--no-transcribe", action="store_true", help="diarization metrics only")
    parser.add_argument("--no-diarize", action="store_true", help="WER only")
    parser.add_argument("--collars", default="0,0.25", help="DER/JER collars in seconds (default 0,0.25)")
    parser.add_argument("--oracle-speakers", action="store_true", help="pass the reference speaker count as a hint")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="override a DiarizationParams field, e.g. clustering_threshold=0.7 (repeatable)")
    parser.add_argument("--json", type=Path, default=ROOT / "artifacts" / "evaluate.json", help="JSON output")
    args = parser.parse_args(argv)

    from tasks.settings import Settings

    paths = args.paths or [str(default_corpus()), PYANNOTE_SAMPLE]
    items = discover(paths)
    if not items:
        raise SystemExit("no audio file with a reference (.rttm, .stm or .txt next to it) found")
    settings = Settings.from_env(model=args.model, diarize=not args.no_diarize)
    params = parse_params(args.param)
    collars = [float(c) for c in args.collars.split(",")]
    started = machine()
    rows = []
    for item in items:
        row = evaluate_item(item, settings, params, transcribe=not args.no_transcribe, collars=collars,
                            oracle_speakers=args.oracle_speakers)
        rows.append(row)
        print(f"  {row['file']}: {row['seconds']}", file=sys.stderr, flush=True)
    summary = summarise(rows, collar=f"{collars[-1]:g}")
    print_table(rows, summary, collars)
    write_json(args.json, {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "machine": started, "load_average_end": machine()["load_average"], "peak_rss_mb": round(peak_rss_mb()),
        "model": args.model, "oracle_speakers": args.oracle_speakers,
        "diarization_params": dataclasses.asdict(params), "files": rows, "summary": summary,
    })
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
