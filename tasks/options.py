"""Everything derived from the knob declarations of :class:`~tasks.settings.Settings`.

A per-run option is one field of ``Settings`` declared with ``knob(run=True, …)``; from it come the DAGs'
Params (:func:`param_specs`, inbox and archive alike), the CLI's flags (:func:`add_cli_flags`), the options a
run keeps and passes on (:func:`run_conf`), the settings a run uses (:func:`run_overrides`) and the ledger's
options key (:func:`options_key`). Adding an option is one edit: a field in ``Settings``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from .settings import ALL_FORMATS, Knob, Settings, field_type, knob_of, parse_bool

KNOBS: dict[str, Knob] = {f.name: knob_of(f) for f in fields(Settings)}
RUN_OPTIONS: tuple[str, ...] = tuple(name for name, k in KNOBS.items() if k.run)
"""Options a DAG run's conf (or a CLI flag) may set for one file."""
OUTPUT_OPTIONS: tuple[str, ...] = tuple(name for name, k in KNOBS.items() if k.output)
"""Settings that change what comes out: the "already processed?" key."""
CLI_OPTIONS: tuple[str, ...] = tuple(name for name, k in KNOBS.items() if (k.cli or k.run) and not k.cli_skip)
"""Settings with a flag of ``securetranscribe transcribe``."""

_JSON_TYPES = {str: "string", Path: "string", int: "integer", float: "number", bool: "boolean", tuple: "array",
               dict: "object"}


def _is_unset(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | tuple | dict) and len(value) == 0)


def run_conf(conf: Mapping[str, Any] | None) -> dict[str, Any]:
    """The run options set in a conf/params mapping, as given (JSON-safe): what a run keeps and passes on."""
    return {k: conf[k] for k in RUN_OPTIONS if conf and k in conf and not _is_unset(conf[k])}


def run_overrides(conf: Mapping[str, Any] | None) -> dict[str, Any]:
    """Settings overrides from a run's conf: each set option converted to its field's type."""
    out: dict[str, Any] = {}
    for key, value in run_conf(conf).items():
        out[key] = _convert(key, value)
    return out


def _convert(key: str, value: Any) -> Any:
    kind = field_type(key)
    if kind is tuple:
        items = value.split(",") if isinstance(value, str) else value
        return tuple(str(v).strip().lower() for v in items if str(v).strip())
    if kind is dict:
        if isinstance(value, str | Path):  # a mapping file
            from .exports import load_speaker_names

            return load_speaker_names(value)
        if not isinstance(value, Mapping):
            raise ValueError(f"{key} must be a mapping, got {type(value).__name__}")
        return {str(k): str(v) for k, v in value.items()}
    if kind is bool:
        return value if isinstance(value, bool) else parse_bool(str(value))
    if kind in (int, float):
        return kind(value)
    return str(value) if kind in (str, Path) else value


def run_settings(base: Settings, conf: Mapping[str, Any] | None) -> Settings:
    """The settings one run uses: ``base`` (environment or CLI) with the run's options."""
    return base.replace(**run_overrides(conf))


def param_specs() -> dict[str, dict[str, Any]]:
    """JSON-schema keyword arguments of an Airflow ``Param`` per run option (null: the settings' value)."""
    specs = {}
    for name in RUN_OPTIONS:
        k, kind = KNOBS[name], field_type(name)
        spec: dict[str, Any] = {"default": None, "type": ["null", _JSON_TYPES[kind]], "title": name,
                                "description": k.help}
        if k.minimum is not None:
            spec["minimum"] = k.minimum
        if kind is tuple and k.choices:
            spec["items"] = {"type": "string", "enum": list(k.choices)}
        specs[name] = spec
    return specs


# -- the command line ----------------------------------------------------------------------------------
def _formats(text: str) -> tuple[str, ...]:
    keys = tuple(k.strip().lower() for k in text.split(",") if k.strip())
    bad = [k for k in keys if k not in ALL_FORMATS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown format(s) {', '.join(bad)}; choose from {','.join(ALL_FORMATS)}")
    return keys


class _SpeakerNames(argparse.Action):
    """``--speaker-name SPEAKER_00=Diane`` (repeatable) or ``--speaker-name names.json``."""

    def __call__(self, parser: Any, namespace: Any, value: Any, option: Any = None) -> None:
        names = dict(getattr(namespace, self.dest) or {})
        if "=" in value:
            label, _, name = value.partition("=")
            names[label.strip()] = name.strip()
        else:
            from .exports import load_speaker_names

            names.update(load_speaker_names(value))
        setattr(namespace, self.dest, names)


def add_cli_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per CLI option (``--field-name``, or the knob's ``flag``); unset flags stay ``None``."""
    for name in CLI_OPTIONS:
        k, kind = KNOBS[name], field_type(name)
        flag = k.flag or "--" + name.replace("_", "-")
        if kind is bool:
            group = parser.add_mutually_exclusive_group()
            group.add_argument(flag, dest=name, action="store_const", const=True, default=None, help=k.help)
            if k.negative:
                group.add_argument(k.negative, dest=name, action="store_const", const=False,
                                   help=f"the opposite of {flag}")
        elif kind is dict:
            parser.add_argument(flag, dest=name, action=_SpeakerNames, default=None, metavar=k.metavar, help=k.help)
        elif kind is tuple:
            parser.add_argument(flag, dest=name, type=_formats, default=None, metavar=k.metavar, help=k.help)
        else:
            parser.add_argument(flag, dest=name, type=kind if kind in (int, float) else str, default=None,
                                choices=k.choices, metavar=k.metavar, help=k.help)


def cli_settings(args: argparse.Namespace, base: Settings | None = None) -> tuple[Settings, dict[str, Any]]:
    """(base settings with the CLI's non-run flags, the run conf of its run-option flags)."""
    values = {name: getattr(args, name, None) for name in CLI_OPTIONS}
    settings = (base or Settings.from_env()).replace(**{k: v for k, v in values.items() if k not in RUN_OPTIONS})
    return settings, {k: v for k, v in values.items() if k in RUN_OPTIONS and v is not None}


# -- what determines the output ------------------------------------------------------------------------
def output_options(settings: Settings) -> dict[str, Any]:
    """The options that determine the output for a given input (JSON-safe)."""
    return {name: str(v) if isinstance(v := getattr(settings, name), Path) else v for name in OUTPUT_OPTIONS}


def options_key(settings: Settings) -> str:
    """A short stable hash of :func:`output_options`: same input + same key = same output."""
    blob = json.dumps(output_options(settings), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def settings_table() -> str:
    """The README's settings table (Markdown), generated from the declarations."""
    from dataclasses import fields

    from .settings import PROJECT_ROOT, env_name

    rows = ["| variable | default | per run | meaning |", "|---|---|---|---|"]
    for f in fields(Settings):
        k = KNOBS[f.name]
        default = f.default_factory() if callable(f.default_factory) else f.default  # type: ignore[misc]
        if isinstance(default, Path):
            default = str(default.relative_to(PROJECT_ROOT)) + "/" if default.is_relative_to(PROJECT_ROOT) else default
        elif isinstance(default, tuple):
            default = " ".join(default)
        elif isinstance(default, bool):
            default = "1" if default else "0"
        shown = "unset" if default is None or default == {} else f"`{default}`"
        where = "conf" + (", CLI" if f.name in CLI_OPTIONS else "") if k.run else ("CLI" if f.name in CLI_OPTIONS
                                                                                   else "")
        rows.append(f"| `{env_name(f.name)}` | {shown} | {where} | {k.help.replace('|', '/')} |")
    return "\n".join(rows) + "\n"
