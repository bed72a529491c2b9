"""Throw-away servers for tests: a real PostgreSQL on 127.0.0.1 in a temporary data directory.

    with postgres_server() as pg:          # raises ServerUnavailable when it cannot start
        url = pg.create_database("metrics")  # postgresql+psycopg://postgres:…@127.0.0.1:PORT/metrics

In pytest use :func:`postgres_or_skip`, which turns ``ServerUnavailable`` into a loud skip.
Postgres refuses to run as root: under root the server runs as the ``postgres`` user (Debian).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True)


class ServerUnavailable(RuntimeError):
    """The server binaries are missing or the server did not start."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition, timeout: float, what: str, interval: float = 0.2, alive=None):
    """Poll ``condition()`` until truthy (returned) or ``timeout`` s pass; ``alive()`` False aborts early."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
            if result:
                return result
        except Exception as exc:
            last = exc
        if alive is not None and not alive():
            raise ServerUnavailable(f"{what}: process exited while waiting (last error: {last})")
        time.sleep(interval)
    raise TimeoutError(f"{what}: not ready after {timeout:.0f} s (last error: {last})")


def _pg_bin(name: str) -> str:
    for d in PG_BIN_DIRS:
        if (d / name).is_file():
            return str(d / name)
    found = shutil.which(name)
    if found:
        return found
    raise ServerUnavailable(f"PostgreSQL binary {name!r} not found (Debian: apt-get install postgresql)")


@dataclass
class PostgresServer:
    host: str
    port: int
    user: str
    password: str
    data_dir: Path

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """CREATE DATABASE ``name`` (if missing) and return its SQLAlchemy URL."""
        import psycopg

        with psycopg.connect(self.url(driver="postgresql"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextmanager
def postgres_server(timeout: float = 60.0) -> Iterator[PostgresServer]:
    """Start PostgreSQL (initdb + postgres) on 127.0.0.1:<free port>; stop it and delete its data on exit."""
    initdb, postgres = _pg_bin("initdb"), _pg_bin("postgres")
    run_as: str | None = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise ServerUnavailable("running as root and no 'postgres' user to run PostgreSQL as") from None
        run_as = "postgres"
    root = Path(tempfile.mkdtemp(prefix="st-pg-"))
    data = root / "data"
    password = secrets.token_hex(16)
    (root / "pw").write_text(password)
    if run_as:
        entry = pwd.getpwnam(run_as)
        for p in (root, root / "pw"):
            os.chown(p, entry.pw_uid, entry.pw_gid)
    proc: subprocess.Popen | None = None
    log = None
    try:
        init = subprocess.run(
            [initdb, "-D", str(data), "-U", "postgres", "--auth=scram-sha-256", f"--pwfile={root / 'pw'}",
             "--encoding=UTF8", "--locale=C", "--no-sync"],
            user=run_as, capture_output=True, text=True, check=False, cwd=root,
        )
        if init.returncode != 0:
            raise ServerUnavailable(f"initdb failed: {init.stderr.strip()[-2000:]}")
        port = free_port()
        log = open(root / "postgres.log", "w")  # the child inherits the descriptor
        proc = subprocess.Popen(
            [postgres, "-D", str(data), "-h", "127.0.0.1", "-p", str(port), "-k", "", "-c", "fsync=off",
             "-c", "full_page_writes=off", "-c", "synchronous_commit=off", "-c", "max_connections=50"],
            user=run_as, stdout=log, stderr=subprocess.STDOUT, cwd=root, start_new_session=True,
        )
        server = PostgresServer("127.0.0.1", port, "postgres", password, data)

        def ready() -> bool:
            import psycopg

            with psycopg.connect(server.url(driver="postgresql"), connect_timeout=2) as conn:
                return conn.execute("SELECT 1").fetchone() == (1,)

        try:
            wait_until(ready, timeout, "PostgreSQL", alive=lambda: proc.poll() is None)
        except (TimeoutError, ServerUnavailable) as exc:
            tail = (root / "postgres.log").read_text(errors="replace")[-2000:]
            raise ServerUnavailable(f"{exc}\n{tail}") from None
        yield server
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if log is not None:
            log.close()
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def postgres_or_skip(timeout: float = 60.0) -> Iterator[PostgresServer]:
    """:func:`postgres_server` for pytest fixtures: a loud skip (and a warning) when it cannot start."""
    import pytest

    try:
        cm = postgres_server(timeout)
        server = cm.__enter__()
    except ServerUnavailable as exc:
        reason = f"PostgreSQL NOT TESTED: cannot start a local server: {exc}"
        warnings.warn(reason, stacklevel=2)
        pytest.skip(reason)
    try:
        yield server
    finally:
        cm.__exit__(None, None, None)
