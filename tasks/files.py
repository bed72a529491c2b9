"""Durable file operations: atomic writes (temp + fsync + rename), restrictive modes, hashing."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

FILE_MODE = 0o640
DIR_MODE = 0o750


def ensure_dir(path: str | Path) -> Path:
    """Create a folder (and parents) with mode 0750; returns it."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    return path


NAME_MAX = 255  # bytes, on Linux file systems
MKSTEMP_RANDOM = 8  # characters mkstemp adds between prefix and suffix


def fit_name(stem: str, suffix: str = "", limit: int = NAME_MAX) -> str:
    """``stem + suffix`` cut (at a character boundary) so that it fits in ``limit`` bytes."""
    room = limit - len(suffix.encode())
    while len(stem.encode()) > room:
        stem = stem[:-1]
    return stem + suffix


def temp_prefix(name: str) -> str:
    """``.<name>.`` for a temporary sibling of ``name``, cut so that the whole temp name fits in NAME_MAX."""
    return fit_name(f".{name}", ".", NAME_MAX - MKSTEMP_RANDOM - len(".tmp"))


def atomic_write_bytes(path: str | Path, data: bytes, mode: int = FILE_MODE) -> Path:
    """Write ``data`` so that readers see either the old file or the whole new one, never a part."""
    path = Path(path)
    ensure_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str, mode: int = FILE_MODE) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), mode)


def atomic_write_json(path: str | Path, data: Any, mode: int = FILE_MODE) -> Path:
    return atomic_write_text(path, json.dumps(data, ensure_ascii=False, indent=2), mode)


def fsync_dir(path: str | Path) -> None:
    """Make a rename inside ``path`` durable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sha256_file(path: str | Path, bufsize: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(bufsize):
            h.update(chunk)
    return h.hexdigest()
