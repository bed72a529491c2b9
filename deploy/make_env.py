"""Write a deployment ``.env`` from ``.env.example`` with fresh random secrets.

    python deploy/make_env.py [.env] [--force] [--set KEY=VALUE ...]

Every ``CHANGE_ME`` value gets a new secret (a Fernet key for ``AIRFLOW_FERNET_KEY``, URL-safe random
text for the rest). The file is created with mode 0600 and an existing one is never overwritten
unless ``--force`` is given.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLACEHOLDER = "CHANGE_ME"


def secret_for(key: str) -> str:
    if key == "AIRFLOW_FERNET_KEY":
        from cryptography.fernet import Fernet

        return Fernet.generate_key().decode()
    return secrets.token_hex(24)  # hex: safe inside connection URLs


def render(example: str, overrides: dict[str, str] | None = None) -> str:
    """The example's lines with placeholders replaced and ``overrides`` applied (appended when new)."""
    overrides = dict(overrides or {})
    out = []
    for line in example.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            key = key.strip()
            if key in overrides:
                value = overrides.pop(key)
            elif value.strip() == PLACEHOLDER:
                value = secret_for(key)
            line = f"{key}={value}"
        out.append(line)
    out += [f"{k}={v}" for k, v in overrides.items()]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default=str(ROOT / ".env"))
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    path = Path(args.path)
    if path.exists() and not args.force:
        print(f"{path} exists; not overwriting (use --force)", file=sys.stderr)
        return 1
    overrides = dict(item.split("=", 1) for item in args.set)
    text = render((ROOT / ".env.example").read_text(encoding="utf-8"), overrides)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    print(f"wrote {path} (mode 0600): keep it secret, never commit it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
