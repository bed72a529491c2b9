"""Quality benchmark: the library pipeline over a folder of audio + references.

    python benchmarks/evaluate.py [PATH ...] [--model tiny.en] [--no-transcribe] [--json OUT]

PATH: folders (searched recursively), audio files, or ``pyannote-sample``; default: the shared corpus
and the pyannote sample. Every audio file with a reference next to it (same stem) is scored:

- ``.rttm`` (+ ``.uem`` when present): DER and JER (pyannote.metrics) at each collar (0 and 0.25 s),
  speaker-count error. No speaker-count hint unless ``--oracle-speakers``.
- ``.txt``: WER (jiwer, Whisper-style normalisation). Lines of ``label<TAB>text`` are also a
  speaker-attributed reference.
- ``.stm``: WER, and speaker-attributed WER (cpWER) when diarization runs too.

``--segments`` also transcribes files that only have an RTTM and compares segments and cues before and after
the merge's rules (speaker fragments of one or two words inside a sentence, pauses inside segments, cues under
1 s, cpWER) and reports the pauses between words by whether the reference speaker changes.

``--coverage`` (issue 13 part 1) measures speech without words: stretches of 1 s or more where the diarization
has a speaker and no word lies within 0.5 s (words stretched over more than 2 s by the alignment count as none),
for bare batched faster-whisper over the whole file and for the pipeline (chunk plan and second pass) in the
same run, with both transcription times; cpWER of both on files with an STM, and the WER of the same
utterances transcribed one by one; WER of both on single-speaker files. PATH may be ``built`` (the multi-speaker
files of ``common.built_files``, built from the corpus into ``--build-dir``), ``held-out`` (those of
``common.held_out_files``: other utterances and voices, no setting chosen on them) or ``long-meeting`` (the
corpus's ``make_long.py`` meeting, 20 min).

Prints a table and writes all numbers, the settings and the machine to a JSON file.
"""

from __future__ import annotations

import argparse
import copy
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
    display_name,
    expand_built,
    machine,
    parse_params,
    peak_rss_mb,
    write_json,
)


def evaluate_item(item: Item, settings: Any, params: Any, *, transcribe: bool, collars: list[float],
                  oracle_speakers: bool = False, segments: bool = False) -> dict[str, Any]:
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
    out: dict[str, Any] = {"file": display_name(item.audio), "duration": round(duration, 2)}

    reference_turns = read_rttm(item.rttm) if item.rttm else None
    ref_text, ref_speakers = None, None
    if item.stm:
        utterances = read_stm(item.stm)
        ref_speakers = speaker_texts(utterances)
        ref_text = " ".join(u.text for u in utterances)
    elif item.txt:
        ref_text, ref_speakers = read_text_reference(item.txt)

    turns, exclusive = None, None
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

    if transcribe and (ref_text is not None or (segments and turns is not None)):
        from tasks.assemble import segment_rules
        from tasks.merge import merge

        t0 = time.perf_counter()
        plan = make_plan(audio, settings)
        run = transcribe_plan(audio, plan, settings)
        seconds["transcribe"] = time.perf_counter() - t0
        if ref_text is not None:
            hyp_text = " ".join(s.text for s in run.segments)
            errors = word_errors(ref_text, hyp_text)
            out["wer"] = errors.rate
            out["word_errors"] = dataclasses.asdict(errors)
        if ref_speakers and turns is not None:
            merged = merge(copy.deepcopy(run.segments), exclusive or turns, turns, segment_rules(settings))
            cp = cp_wer(ref_speakers, _speaker_texts(merged))
            out["cpwer"] = cp["cpwer"]
            out["cpwer_mapping"] = cp["mapping"]
        if segments and turns is not None:
            out["segments"] = segment_stats(run.segments, exclusive or turns, turns, settings, duration,
                                            reference_turns, ref_speakers)
    out["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
    return out


def coverage_item(item: Item, settings: Any, params: Any, speech_from: str = "diarization") -> dict[str, Any]:
    """Speech without words, times and word errors: bare batched faster-whisper vs the pipeline, same run.

    ``speech_from``: where the speech is (``diarization``, the ``reference`` RTTM, or the ``vad``)."""
    import numpy as np
    from faster_whisper import BatchedInferencePipeline

    from tasks.assemble import segment_rules
    from tasks.audio import decode
    from tasks.chunking import Span, make_plan
    from tasks.coverage import coverage, union
    from tasks.devices import cpu_threads
    from tasks.diarization import diarize
    from tasks.evaluation import cp_wer, read_rttm, read_stm, read_text_reference, speaker_texts, word_errors
    from tasks.merge import merge
    from tasks.result import Segment
    from tasks.transcription import _to_segment, initial_state, load_model, resolve_model, transcribe_plan

    audio = decode(item.audio)
    duration = len(audio) / 16000
    out: dict[str, Any] = {"file": display_name(item.audio), "duration": round(duration, 2)}
    state = initial_state(settings, settings.chunk_target_s)
    model = load_model(resolve_model(settings.model, settings.models_dir), state.device, state.compute_type,
                       cpu_threads(settings.cpu_threads))
    plan = make_plan(audio, settings)
    def bare(piece: Any, language: str | None = settings.language) -> list[Segment]:
        raw, _ = BatchedInferencePipeline(model).transcribe(
            piece, language=language, beam_size=settings.beam_size, word_timestamps=True, vad_filter=True,
            batch_size=settings.batch_size)
        whole = Span(0, 0.0, len(piece) / 16000)
        return [_to_segment(r, whole) for r in raw]

    t0 = time.perf_counter()
    bare_segments = bare(audio)
    bare_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    run = transcribe_plan(audio, plan, settings)
    ours_s = time.perf_counter() - t0
    redecoded = [r for c in run.chunks for r in c.redecoded]
    out["seconds"] = {"bare": round(bare_s, 2), "pipeline": round(ours_s, 2),
                      "second_pass": round(sum(c.redecode_seconds for c in run.chunks), 2)}
    out["time_ratio"] = round(ours_s / bare_s, 3) if bare_s else None
    variants = {"bare": bare_segments, "pipeline": run.segments}

    def words_of(segs: Any) -> list[tuple[float, float]]:
        return [(w.start, w.end) for s in segs for w in s.words]

    if item.rttm:  # against the exact reference too (independent of the diarization's errors)
        reference = [(t.start, t.end) for t in read_rttm(item.rttm)]
        out["reference_without_words_ratio"] = {
            name: coverage(reference, words_of(segs))["without_words_ratio"] for name, segs in variants.items()}
    print(f"  {out['file']}: transcribed {out['seconds']}, ratio {out['time_ratio']}, "
          f"{out.get('reference_without_words_ratio', '')}", file=sys.stderr, flush=True)

    turns = None
    if settings.diarize:
        t0 = time.perf_counter()
        result = diarize(audio, settings, params=params)
        out["seconds"]["diarize"] = round(time.perf_counter() - t0, 2)
        turns = result.turns
    if speech_from == "diarization" and turns is not None:
        speech, source = [(t.start, t.end) for t in turns], "diarization"
    elif speech_from == "reference" and item.rttm:
        speech, source = [(t.start, t.end) for t in read_rttm(item.rttm)], "reference"
    else:
        speech, source = [(s / 16000, e / 16000) for s, e in plan.regions], "vad"
    out["speech_source"] = source
    for name, segs in variants.items():
        cov = coverage(speech, words_of(segs), redecoded if name == "pipeline" else (), source=source)
        cov["without_words_s_plain"] = coverage(speech, words_of(segs), max_word_s=float("inf"))["without_words_s"]
        cov["words"] = [[round(a, 3), round(b, 3)] for a, b in words_of(segs)]  # to measure against other speech
        out[name] = cov
    ref_speakers, ref_text = None, None
    if item.stm:
        utterances = read_stm(item.stm)
        ref_speakers, ref_text = speaker_texts(utterances), " ".join(u.text for u in utterances)
        one_by_one = []
        for u in utterances:
            one_by_one += bare(np.ascontiguousarray(audio[round(u.start * 16000):round(u.end * 16000)]),
                               run.language)
        out["wer_one_by_one"] = word_errors(ref_text, " ".join(s.text for s in one_by_one)).rate
    elif item.txt:
        ref_text, ref_speakers = read_text_reference(item.txt)
    for name, segs in variants.items():
        if ref_text is not None:
            out[name]["wer"] = word_errors(ref_text, " ".join(s.text for s in segs)).rate
        if ref_speakers and turns is not None:
            merged = merge(copy.deepcopy(list(segs)), result.exclusive or turns, turns, segment_rules(settings))
            out[name]["cpwer"] = cp_wer(ref_speakers, _speaker_texts(merged))["cpwer"]
    out["speech_s_vad"] = round(sum(e - s for s, e in union((s / 16000, e / 16000) for s, e in plan.regions)), 2)
    return out


def coverage_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals of ``--coverage``: speech without words and transcription time, bare vs pipeline."""
    out: dict[str, Any] = {"files": len(rows)}
    for name in ("bare", "pipeline"):
        speech = sum(r[name]["speech_s"] for r in rows)
        missing = sum(r[name]["without_words_s"] for r in rows)
        out[name] = {"speech_s": round(speech, 1), "without_words_s": round(missing, 1),
                     "without_words_ratio": round(missing / speech, 4) if speech else 0.0,
                     "worst_ratio": max((r[name]["without_words_ratio"] for r in rows), default=0.0),
                     "seconds": round(sum(r["seconds"][name] for r in rows), 1)}
    bare_s = out["bare"]["seconds"]
    out["time_ratio"] = round(out["pipeline"]["seconds"] / bare_s, 3) if bare_s else None
    return out


def print_coverage(rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    head = (f"{'file':30s} {'dur':>6s} {'speech':>7s} {'bare%':>6s} {'ours%':>6s} {'redec':>5s} {'bare s':>7s} "
            f"{'ours s':>7s} {'ratio':>5s} {'WERb':>5s} {'WERo':>5s} {'cpWb':>5s} {'cpWo':>5s} {'1by1':>5s}")
    print(head)
    print("-" * len(head))

    def f(v: Any) -> str:
        return f"{v:5.3f}" if isinstance(v, float) else "    -"

    for r in rows:
        b, o = r["bare"], r["pipeline"]
        print(f"{r['file'][-30:]:30s} {r['duration']:6.0f} {o['speech_s']:7.1f} {100 * b['without_words_ratio']:6.1f} "
              f"{100 * o['without_words_ratio']:6.1f} {o['redecoded']:5d} {r['seconds']['bare']:7.1f} "
              f"{r['seconds']['pipeline']:7.1f} {r['time_ratio']:5.2f} {f(b.get('wer'))} {f(o.get('wer'))} "
              f"{f(b.get('cpwer'))} {f(o.get('cpwer'))} {f(r.get('wer_one_by_one'))}")
    print(f"\ntotals: {summary}")


def _speaker_texts(segments: Any) -> dict[str, str]:
    by_speaker: dict[str, list[str]] = {}
    for seg in segments:
        for w in seg.words:
            by_speaker.setdefault(w.speaker or "?", []).append(w.text)
    return {k: "".join(v) for k, v in by_speaker.items()}


def segment_stats(transcribed: Any, turns: Any, overlapping: Any, settings: Any, duration: float,
                  reference: Any, ref_speakers: dict[str, str] | None) -> dict[str, Any]:
    """Segments and cues before (each word on its own speaker, segments cut only where it changes: the merge
    before issue 13) and after (:func:`tasks.merge.merge`): speaker fragments of one or two words inside a
    sentence, pauses inside segments, cue durations, cpWER; and the pauses between words, by whether the
    reference has the same speaker on both sides."""
    from tasks.assemble import segment_rules
    from tasks.evaluation import cp_wer
    from tasks.exports import ExportOptions
    from tasks.exports.subtitles import build_cues
    from tasks.merge import assign_speakers, fragments, merge, regroup, sentences
    from tasks.result import Transcript

    rules = segment_rules(settings)
    before = copy.deepcopy(list(transcribed))
    assign_speakers([w for s in before for w in s.words], turns)
    variants = {"before": regroup(before),
                "after": merge(copy.deepcopy(list(transcribed)), turns, overlapping, rules)}
    out: dict[str, Any] = {}
    for name, segs in variants.items():
        words = [w for s in segs for w in s.words]
        cues = build_cues(Transcript("en", duration, segs), ExportOptions())
        spans = [(c.end_ms - c.start_ms) / 1000 for c in cues]
        squeezed = [i for i, c in enumerate(cues) if spans[i] < 1.0
                    and (i == 0 or cues[i - 1].end_ms == c.start_ms or c.start_ms == 0)
                    and (i + 1 == len(cues) or cues[i + 1].start_ms == c.end_ms or c.end_ms >= duration * 1000 - 1)]
        out[name] = {
            "segments": len(segs),
            "fragments": [" ".join(w.text.strip() for w in f) for f in fragments(words, rules.max_gap_s)],
            "inner_pauses_over_max_gap": sum(b.start - a.end > rules.max_gap_s for s in segs
                                             for a, b in zip(s.words, s.words[1:])),
            "longest_segment_s": round(max((s.end - s.start for s in segs), default=0.0), 2),
            "cues": len(cues), "cues_under_1s": sum(d < 1.0 for d in spans),
            "cues_under_1s_with_room": sum(d < 1.0 for d in spans) - len(squeezed),
            "shortest_cue_s": min(spans, default=None),
        }
        if ref_speakers:
            out[name]["cpwer"] = cp_wer(ref_speakers, _speaker_texts(segs))["cpwer"]
    if reference:
        words = [w for s in variants["after"] for w in s.words]
        ends = {id(u[-1]) for u in sentences(words, float("inf"))}
        gaps: dict[str, list[float]] = {"same_speaker": [], "speaker_change": [], "in_sentence": []}
        for a, b in zip(words, words[1:]):
            ra, rb = _reference_speaker(a, reference), _reference_speaker(b, reference)
            gap = round(b.start - a.end, 3)
            if ra and rb:
                gaps["same_speaker" if ra == rb else "speaker_change"].append(gap)
            if id(a) not in ends:
                gaps["in_sentence"].append(gap)
        out["gaps"] = gaps
    return out


def _reference_speaker(word: Any, reference: Any) -> str | None:
    """The reference speaker that overlaps a word most (None outside every turn)."""
    best, most = None, 0.0
    for t in reference:
        shared = min(t.end, max(word.end, word.start + 0.02)) - max(t.start, word.start)
        if shared > most:
            best, most = t.speaker, shared
    return best


def segment_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over the files of ``--segments``, and percentiles of the pauses between words."""
    scored = [r["segments"] for r in rows if "segments" in r]
    out: dict[str, Any] = {"files": len(scored)}
    for name in ("before", "after"):
        out[name] = {key: sum(len(s[name][key]) if key == "fragments" else s[name][key] for s in scored)
                     for key in ("segments", "fragments", "inner_pauses_over_max_gap", "cues", "cues_under_1s",
                                 "cues_under_1s_with_room")}
        out[name]["longest_segment_s"] = max((s[name]["longest_segment_s"] for s in scored), default=0.0)
    for kind in ("same_speaker", "speaker_change", "in_sentence"):
        gaps = sorted(g for s in scored for g in s.get("gaps", {}).get(kind, []))
        if gaps:
            out[f"gaps_{kind}"] = {
                "n": len(gaps), **{f"p{q}": gaps[min(len(gaps) - 1, int(q / 100 * len(gaps)))] for q in (50, 90, 99)},
                **{f"over_{t:g}s": round(sum(g > t for g in gaps) / len(gaps), 4) for t in (0.5, 0.75, 1.0, 1.5, 2.0)}}
    return out


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


def print_segments(rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    print(f"\n{'file':34s} {'':6s} {'segs':>5s} {'frag':>5s} {'pause':>5s} {'long':>5s} {'cues':>5s} {'<1s':>4s} "
          f"{'room':>4s} {'cpWER':>6s}  fragments")
    for r in rows:
        for name in ("before", "after"):
            s = r.get("segments", {}).get(name)
            if s:
                cp = f"{s['cpwer']:6.3f}" if "cpwer" in s else "     -"
                print(f"{r['file'][:34]:34s} {name:6s} {s['segments']:5d} {len(s['fragments']):5d} "
                      f"{s['inner_pauses_over_max_gap']:5d} {s['longest_segment_s']:5.1f} {s['cues']:5d} "
                      f"{s['cues_under_1s']:4d} {s['cues_under_1s_with_room']:4d} {cp}  {s['fragments']}")
    for name in ("before", "after"):
        print(f"{name:6s} totals: {summary[name]}")
    for key, value in summary.items():
        if key.startswith("gaps_"):
            print(f"{key}: {value}")


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
    parser.add_argument("--segments", action="store_true", help="also transcribe files with only an RTTM and "
                        "report segments and cues before/after the merge's rules (speaker fragments, pauses, "
                        "short cues, cpWER) and the pauses between words")
    parser.add_argument("--coverage", action="store_true", help="speech without words, bare batched faster-whisper "
                        "vs the pipeline (second pass), times, cpWER and one-by-one WER (issue 13 part 1)")
    parser.add_argument("--speech", choices=("diarization", "reference", "vad"), default="diarization",
                        help="--coverage: where the speech is (default: the diarization's turns)")
    parser.add_argument("--build-dir", type=Path, default=None, help="where 'built', 'held-out' and 'long-meeting' are "
                        "written (default: a temporary folder)")
    parser.add_argument("--json", type=Path, default=ROOT / "artifacts" / "evaluate.json", help="JSON output")
    args = parser.parse_args(argv)

    from tasks.settings import Settings

    paths = args.paths or [str(default_corpus()), PYANNOTE_SAMPLE]
    items = discover(expand_built(paths, args.build_dir))
    if not items:
        raise SystemExit("no audio file with a reference (.rttm, .stm or .txt next to it) found")
    settings = Settings.from_env(model=args.model, diarize=not args.no_diarize)
    params = parse_params(args.param)
    collars = [float(c) for c in args.collars.split(",")]
    started = machine()
    rows = []
    if args.coverage:
        for item in items:
            rows.append(coverage_item(item, settings, params, args.speech))
            print(f"  {rows[-1]['file']}: {rows[-1]['seconds']}", file=sys.stderr, flush=True)
        summary = coverage_summary(rows)
        print_coverage(rows, summary)
        write_json(args.json, {
            "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
            "machine": started, "load_average_end": machine()["load_average"], "model": args.model,
            "settings": {"redecode_min_s": settings.redecode_min_s, "batch_size": settings.batch_size},
            "speech": args.speech,
            "files": rows, "summary": summary})
        print(f"\nJSON: {args.json}")
        return 0
    for item in items:
        row = evaluate_item(item, settings, params, transcribe=not args.no_transcribe, collars=collars,
                            oracle_speakers=args.oracle_speakers, segments=args.segments)
        rows.append(row)
        print(f"  {row['file']}: {row['seconds']}", file=sys.stderr, flush=True)
    summary = summarise(rows, collar=f"{collars[-1]:g}")
    print_table(rows, summary, collars)
    if args.segments:
        summary["segments"] = segment_summary(rows)
        print_segments(rows, summary["segments"])
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
