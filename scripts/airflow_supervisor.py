"""Run SecureTranscribe's embedded Airflow: api-server, scheduler, dag-processor and triggerer.

    .venv/bin/python scripts/airflow_supervisor.py [--port 8080] [--host 127.0.0.1]

Airflow runs on SQLite with the LocalExecutor, its home inside ``$SECURETRANSCRIBE_HOME/airflow``.
The supervisor migrates the database, loads the pools (``gpu`` slots = GPUs found, 1 without one),
starts the four components in their own process groups, unpauses the DAGs, prints the UI address,
the generated admin password and the inbox path, and stays in the foreground. On Ctrl-C or SIGTERM
it stops every process it started (SIGTERM, then SIGKILL after a grace period). A component that
dies is restarted (at most 5 times in 10 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tasks.devices import cuda_device_count
from tasks.settings import Settings

ROOT = Path(__file__).resolve().parent.parent

DAG_IDS = ("securetranscribe_inbox", "securetranscribe_process", "securetranscribe_process_batch",
           "securetranscribe_archive")
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
GRACE_S = 30.0


def airflow_env(settings: Settings, port: int, host: str) -> dict[str, str]:
    """The environment every Airflow component of this deployment runs with."""
    home = settings.home / "airflow"
    home.mkdir(parents=True, exist_ok=True, mode=0o750)
    cores = os.cpu_count() or 2
    env = {
        **os.environ,
        **settings.as_env(),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(max(4, 2 * cores)),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        # SQLite: wait up to 60 s for a lock instead of the driver's 5 s (four components share one file)
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}?timeout=60",
        "AIRFLOW__API__HOST": host,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
        # log servers next to the UI port, so two deployments on one host do not clash
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(port + 713),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(port + 714),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
    }
    return env


def use_wal(db: Path) -> None:
    """Write-ahead logging: readers no longer block the writer (persistent in the database file)."""
    import sqlite3

    with sqlite3.connect(db, timeout=60) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


def pools_file(settings: Settings) -> Path:
    """include/pools.json with the gpu slots filled in for this machine."""
    spec = json.loads((ROOT / "include" / "pools.json").read_text(encoding="utf-8"))
    spec["gpu"]["slots"] = max(1, cuda_device_count())
    out = settings.home / "airflow" / "pools.generated.json"
    out.write_text(json.dumps(spec, indent=2), encoding="utf-8")
    return out


@dataclass
class Component:
    name: str
    cmd: list[str]
    log: Path
    proc: subprocess.Popen | None = None
    restarts: list[float] = field(default_factory=list)

    def start(self, env: dict[str, str]) -> None:
        fh = open(self.log, "ab")
        self.proc = subprocess.Popen(self.cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        fh.close()

    def signal(self, sig: int) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass


class Supervisor:
    def __init__(self, settings: Settings, port: int, host: str) -> None:
        self.settings = settings
        self.port = port
        self.env = airflow_env(settings, port, host)
        self.home = Path(self.env["AIRFLOW_HOME"])
        logs = self.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        airflow = str(Path(sys.executable).parent / "airflow")
        self.components = [Component(n, [airflow, n], logs / f"{n}.log") for n in COMPONENTS]
        self.stopping = False

    def prepare(self) -> None:
        for folder in (self.settings.inbox, self.settings.outbox, self.settings.archive, self.settings.quarantine,
                       self.settings.work):
            folder.mkdir(parents=True, exist_ok=True, mode=0o750)
        airflow = str(Path(sys.executable).parent / "airflow")
        for cmd in ([airflow, "db", "migrate"], [airflow, "pools", "import", str(pools_file(self.settings))]):
            done = subprocess.run(cmd, env=self.env, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"`{' '.join(cmd[1:])}` failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
            if cmd[1] == "db":
                use_wal(self.home / "airflow.db")

    def start(self) -> None:
        for c in self.components:
            c.start(self.env)

    def stop(self) -> int:
        """SIGTERM every process group, then SIGKILL what is left after the grace period."""
        if self.stopping:
            return 0
        self.stopping = True
        t0 = time.monotonic()
        for c in self.components:
            c.signal(signal.SIGTERM)
        pending = [c for c in self.components if c.proc and c.proc.poll() is None]
        while pending and time.monotonic() - t0 < GRACE_S:
            time.sleep(0.2)
            for c in [c for c in pending if c.proc.poll() is not None]:
                print(f"  {c.name} stopped after {time.monotonic() - t0:.1f} s", flush=True)
                pending.remove(c)
        for c in self.components:
            c.signal(signal.SIGKILL)  # the whole group: also workers a component left behind
            if c.proc and c.proc.poll() is None:
                c.proc.wait()
                print(f"  {c.name} killed after {GRACE_S:.0f} s", flush=True)
        return 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url("/api/v2/monitor/health"), timeout=5) as r:
                health = json.load(r)
        except (urllib.error.URLError, OSError, ValueError):
            return False
        parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
        return all((health.get(p) or {}).get("status") == "healthy" for p in parts)

    def password(self) -> str:
        data = json.loads((self.home / "simple_auth_manager_passwords.json.generated").read_text())
        return data["admin"]

    def token(self) -> str:
        body = json.dumps({"username": "admin", "password": self.password()}).encode()
        req = urllib.request.Request(self.url("/auth/token"), data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)["access_token"]

    def unpause(self) -> list[str]:
        """Unpause our DAGs once the dag-processor has parsed them (they start unpaused; this undoes a pause)."""
        token, done = self.token(), []
        for dag_id in DAG_IDS:
            req = urllib.request.Request(self.url(f"/api/v2/dags/{dag_id}"), method="PATCH",
                                         data=json.dumps({"is_paused": False}).encode(),
                                         headers={"Content-Type": "application/json",
                                                  "Authorization": f"Bearer {token}"})
            try:
                urllib.request.urlopen(req, timeout=70).close()
                done.append(dag_id)
            except urllib.error.HTTPError as exc:
                if exc.code != 404:  # not parsed yet (404) or busy (5xx): the caller tries again
                    print(f"unpausing {dag_id}: HTTP {exc.code}; will retry", flush=True)
        return done

    def watch(self) -> None:
        """Restart components that die; give up on one that keeps dying."""
        for c in self.components:
            if self.stopping or c.proc is None or c.proc.poll() is None:
                continue
            now = time.monotonic()
            c.restarts = [t for t in c.restarts if now - t < 600] + [now]
            if len(c.restarts) > 5:
                print(f"{c.name} keeps exiting (see {c.log}); stopping", flush=True)
                raise SystemExit(self.stop() or 1)
            print(f"{c.name} exited with {c.proc.returncode}; restarting (log: {c.log})", flush=True)
            c.start(self.env)


def main(argv: list[str] | None = None) -> int:
    settings = Settings.from_env()  # SECURETRANSCRIBE_PORT / _HOST give the defaults of --port / --host
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=settings.port,
                        help=f"port of the UI and API (default: {settings.port})")
    parser.add_argument("--host", default=settings.host,
                        help=f"address the UI listens on (default: {settings.host}; 127.0.0.1 is this machine only)")
    parser.add_argument("--ready-timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    settings = settings.replace(port=args.port, host=args.host)  # what the children see in SECURETRANSCRIBE_*

    os.umask(0o027)  # inherited by every Airflow process: data files 0640, folders 0750 at most
    sup = Supervisor(settings, args.port, args.host)

    def on_signal(signum: int, _frame: object) -> None:
        print(f"\nreceived {signal.Signals(signum).name}: stopping Airflow …", flush=True)
        sup.stop()
        raise SystemExit(0)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(f"SecureTranscribe: preparing Airflow in {sup.home}", flush=True)
    sup.prepare()
    sup.start()
    try:
        return serve(sup, settings, args)
    finally:  # whatever happens (an error, a signal), nothing we started outlives us
        sup.stop()


def serve(sup: Supervisor, settings: Settings, args: argparse.Namespace) -> int:
    """Wait until healthy, unpause, print the banner, then watch the components until stopped."""
    deadline = time.monotonic() + args.ready_timeout
    while not sup.healthy():
        sup.watch()
        if time.monotonic() > deadline:
            print(f"Airflow did not become healthy in {args.ready_timeout:.0f} s; logs in {sup.home / 'logs'}")
            return 1
        time.sleep(1.0)
    unpaused: list[str] = []
    while len(unpaused) < 2 and time.monotonic() < deadline:  # the DAGs appear once parsed
        unpaused = sup.unpause()
        if len(unpaused) < 2:
            time.sleep(2.0)
    print(
        "\nSecureTranscribe is running.\n"
        f"  UI:     http://127.0.0.1:{args.port}/   (login: admin / {sup.password()})\n"
        f"  Inbox:  {settings.inbox}   <- drop audio or video files here\n"
        f"  Output: {settings.outbox}\n"
        f"  DAGs:   {', '.join(unpaused)}\n"
        "READY\n"
        "Press Ctrl-C to stop.",
        flush=True,
    )
    while True:
        sup.watch()
        time.sleep(1.0)


if __name__ == "__main__":
    sys.exit(main())
