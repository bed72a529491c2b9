"""``securetranscribe`` command line: transcribe files, fetch and verify models, probe inputs.

Exit codes: 0 success, 2 bad input or usage (one-line reason on stderr), 1 any other failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

from .errors import InputError, SecureTranscribeError
from .settings import ALL_FORMATS, Settings

EXIT_INPUT = 2
EXIT_FAILURE = 1


def _formats(text: str) -> tuple[str, ...]:
    keys = tuple(k.strip().lower() for k in text.split(",") if k.strip())
    bad = [k for k in keys if k not in ALL_FORMATS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown format(s) {', '.join(bad)}; choose from {','.join(ALL_FORMATS)}")
    return keys


def _speaker_names(values: list[str] | None) -> dict[str, str]:
    """``SPEAKER_00=Diane`` pairs, or a JSON file mapping labels to names."""
    names: dict[str, str] = {}
    for value in values or []:
        if "=" in value:
            label, _, name = value.partition("=")
            names[label.strip()] = name.strip()
        else:
            names.update(json.loads(Path(value).read_text(encoding="utf-8")))
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="securetranscribe", description="Private, offline transcription.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("transcribe", help="transcribe and diarize audio files")
    t.add_argument("audio", nargs="+", type=Path)
    t.add_argument("--out", type=Path, default=Path("."), help="output folder (default: current)")
    t.add_argument("--formats", type=_formats, default=None, help=f"comma-separated: {','.join(ALL_FORMATS)}")
    t.add_argument("--model", help="base, tiny.en, a whisper-<name> folder name, or a CTranslate2 path")
    t.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)
    t.add_argument("--compute-type", help="auto, int8, float16, int8_float16, float32 …")
    t.add_argument("--language", help="ISO code; default: detect")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--beam-size", type=int)
    t.add_argument("--initial-prompt")
    t.add_argument("--hotwords")
    t.add_argument("--num-speakers", type=int)
    t.add_argument("--min-speakers", type=int)
    t.add_argument("--max-speakers", type=int)
    t.add_argument("--no-diarize", action="store_true", help="transcription only")
    t.add_argument("--speaker-name", action="append", metavar="LABEL=NAME|FILE.json",
                   help="display name for a speaker (repeatable), or a JSON mapping file")
    t.add_argument("--csv-bom", action="store_true", help="CSV with a UTF-8 BOM for spreadsheets")
    t.add_argument("--csv-raw", action="store_true",
                   help="CSV cells exactly as transcribed (no apostrophe before = + - @; unsafe in spreadsheets)")

    m = sub.add_parser("models", help="fetch or verify model files (set-up)")
    m.add_argument("action", choices=["fetch", "verify", "list"])
    m.add_argument("names", nargs="*", help="artefacts (default: the default set)")
    m.add_argument("--all", action="store_true", help="include the fallback diarization models")

    g = sub.add_parser("purge", help="remove a file's outputs, work files, ledger entry and metrics rows")
    g.add_argument("sha256", help="content hash (see the transcript JSON's source.sha256, or `sha256sum FILE`)")
    g.add_argument("--originals", action="store_true", help="also delete the original audio in archive/quarantine")
    g.add_argument("--dry-run", action="store_true", help="list what would be removed")

    p = sub.add_parser("probe", help="describe an input file (JSON)")
    p.add_argument("audio", type=Path)

    r = sub.add_parser("report", help="summary of the metrics database (timings, real-time factors, failures)")
    r.add_argument("--since", help="7d, 12h, 30m, or an ISO date/datetime")
    r.add_argument("--format", choices=["table", "csv", "json"], default="table")
    r.add_argument("--plot", type=Path, metavar="OUT.png", help="also write a PNG plot")
    r.add_argument("--url", help="metrics database URL (default: SECURETRANSCRIBE_METRICS_URL or <home>/metrics.db)")
    return parser


def _progress(name: str):
    tty = sys.stderr.isatty()
    t0 = time.perf_counter()

    def report(done_s: float, total_s: float, index: int) -> None:
        pct = 100.0 * done_s / total_s if total_s else 100.0
        speed = done_s / max(1e-6, time.perf_counter() - t0)
        line = f"{name}: transcribed {done_s:,.0f}/{total_s:,.0f} s ({pct:.0f} %, {speed:.1f}x real time)"
        print(("\r" + line) if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)

    return report


def cmd_transcribe(args: argparse.Namespace) -> int:
    from .exports import ExportOptions, write_formats
    from .pipeline import transcribe_file

    settings = Settings.from_env(
        model=args.model, device=args.device, compute_type=args.compute_type, language=args.language,
        batch_size=args.batch_size, beam_size=args.beam_size, initial_prompt=args.initial_prompt,
        hotwords=args.hotwords, num_speakers=args.num_speakers, min_speakers=args.min_speakers,
        max_speakers=args.max_speakers, formats=args.formats, diarize=False if args.no_diarize else None,
    )
    options = ExportOptions(speaker_names=_speaker_names(args.speaker_name), csv_bom=args.csv_bom,
                            csv_formula_guard=not args.csv_raw)
    status = 0
    for path in args.audio:
        try:
            transcript = transcribe_file(path, settings, progress=_progress(path.name))
        except InputError as exc:
            print(f"securetranscribe: {path}: {exc}", file=sys.stderr)
            status = max(status, EXIT_INPUT)
            continue
        if sys.stderr.isatty():
            print(file=sys.stderr)
        results = write_formats(transcript, args.out, path.stem, settings.formats, options)
        for r in results:
            if r.ok:
                for f in r.files:
                    print(f)
            else:
                print(f"securetranscribe: {path}: export {r.format} failed: {r.error}", file=sys.stderr)
                status = max(status, EXIT_FAILURE)
        t = transcript.timings
        print(f"{path.name}: {transcript.duration:.0f} s, language {transcript.language}, "
              f"{len(transcript.speakers)} speaker(s), " + ", ".join(f"{k} {v:.1f} s" for k, v in t.items()),
              file=sys.stderr)
    return status


def cmd_models(args: argparse.Namespace) -> int:
    from . import model_store

    settings = Settings.from_env()
    if args.action == "list":
        for name, art in model_store.ARTEFACTS.items():
            state = "present" if model_store.is_present(settings.models_dir, name) else "missing"
            print(f"{name:24s} {state:8s} {'default ' if art.default else 'fallback'} {art.description}")
        return 0
    if args.action == "verify":
        states = model_store.verify(settings.models_dir)
        wanted = args.names or [n for n, a in model_store.ARTEFACTS.items() if a.default or args.all]
        for name in wanted:
            print(f"{'ok' if states[name] else 'MISSING':8s} {name}")
        return 0 if all(states[n] for n in wanted) else EXIT_FAILURE
    names = args.names or ([*model_store.ARTEFACTS] if args.all else None)
    model_store.fetch(settings.models_dir, names)
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    import re

    from .purge import purge

    if not re.fullmatch(r"[0-9a-f]{64}", args.sha256):
        print("securetranscribe: purge needs a full sha256 (64 hex characters)", file=sys.stderr)
        return EXIT_INPUT
    report = purge(args.sha256, originals=args.originals, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for label, items in (("outputs", report.outputs), ("work", report.work), ("original", report.originals)):
        for item in items:
            print(f"{verb} {label}: {item}")
    if not args.dry_run:
        print(f"{verb} ledger entry: {'yes' if report.ledger else 'none'}; metrics rows for "
              f"{report.metrics_files} run(s)")
    if not report.removed_anything:
        print(f"nothing is kept about {args.sha256}", file=sys.stderr)
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from .audio import probe

    print(json.dumps(probe(args.audio).to_dict(), indent=2))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .metrics.report import run

    print(run(args.url or Settings.from_env().metrics_database_url, args.since, args.format, args.plot), end="")
    if args.plot:
        print(f"plot: {args.plot}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    os.umask(0o027)  # everything we create: files 0640, folders 0750 at most
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.verbose == 0:
        warnings.filterwarnings("ignore")
    handlers = {"transcribe": cmd_transcribe, "models": cmd_models, "probe": cmd_probe, "report": cmd_report,
                "purge": cmd_purge}
    try:
        return handlers[args.command](args)
    except InputError as exc:
        print(f"securetranscribe: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except (SecureTranscribeError, ValueError) as exc:
        print(f"securetranscribe: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
