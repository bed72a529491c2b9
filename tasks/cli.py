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
from .offline import ensure_offline
from .options import add_cli_flags, cli_settings
from .settings import Settings

EXIT_INPUT = 2
EXIT_FAILURE = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="securetranscribe", description="Private, offline transcription.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("transcribe", help="transcribe and diarize audio files")
    t.add_argument("audio", nargs="+", type=Path)
    t.add_argument("--out", type=Path, default=Path("."), help="output folder (default: current)")
    add_cli_flags(t)  # one flag per option declared in tasks.settings (knob(run=True) or cli=True)

    s = sub.add_parser("settings", help="the settings in effect (or, with --markdown, the table of every setting)")
    s.add_argument("--markdown", action="store_true", help="the README's table: variable, default, meaning")

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

    x = sub.add_parser("index", help="the full-text index of transcripts (the Transcripts view in Airflow)")
    x.add_argument("action", choices=["rebuild"], help="rebuild: index every run folder's transcript again")

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
    from .pipeline import transcribe_file

    settings, conf = cli_settings(args)
    status = 0
    for path in args.audio:
        failed: list[str] = []

        def report(fmt: str, files: list[str], error: Exception | None, path: Path = path,
                   failed: list[str] = failed) -> None:
            if error is not None:
                print(f"securetranscribe: {path}: {error}", file=sys.stderr)
                failed.append(fmt)
            for f in files:
                print(f)

        try:
            transcript = transcribe_file(path, settings, conf=conf, progress=_progress(path.name), out_dir=args.out,
                                         stem=path.stem, on_export=report)
        except InputError as exc:
            print(f"securetranscribe: {path}: {exc}", file=sys.stderr)
            status = max(status, EXIT_INPUT)
            continue
        if failed:
            status = max(status, EXIT_FAILURE)
        if sys.stderr.isatty():
            print(file=sys.stderr)
        t = transcript.timings
        print(f"{path.name}: {transcript.duration:.0f} s, language {transcript.language}, "
              f"{len(transcript.speakers)} speaker(s), " + ", ".join(f"{k} {v:.1f} s" for k, v in t.items()),
              file=sys.stderr)
    return status


PASSWORD_MASK = r"://\1:***@"


def cmd_settings(args: argparse.Namespace) -> int:
    from .options import settings_table

    if args.markdown:
        print(settings_table(), end="")
        return 0
    import re

    for name, value in sorted(Settings.from_env().as_env().items()):
        print(f"{name}={re.sub(r'://([^:/@]+):[^@]+@', PASSWORD_MASK, value)}")  # no database passwords
    return 0


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
    model_store.fetch(settings.models_dir, names, wheelhouse=settings.wheelhouse)
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


def cmd_index(args: argparse.Namespace) -> int:
    from .metrics import MetricsStore
    from .transcripts import rebuild

    settings = Settings.from_env()
    if not settings.metrics_database_url:
        print("securetranscribe: the metrics database is off (SECURETRANSCRIBE_METRICS_URL=none)", file=sys.stderr)
        return EXIT_FAILURE
    store = MetricsStore(settings.metrics_database_url)
    store.upgrade()
    count = rebuild(store, settings)
    store.close()
    print(f"indexed {count} transcript(s) from {settings.work}")
    return 0


def main(argv: list[str] | None = None) -> int:
    os.umask(0o027)  # everything we create: files 0640, folders 0750 at most
    ensure_offline()
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.verbose == 0:
        warnings.filterwarnings("ignore")
    handlers = {"transcribe": cmd_transcribe, "models": cmd_models, "probe": cmd_probe, "report": cmd_report,
                "purge": cmd_purge, "settings": cmd_settings, "index": cmd_index}
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
