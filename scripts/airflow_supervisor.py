"""Run SecureTranscribe's embedded Airflow: api-server, scheduler, dag-processor and triggerer.

    .venv/bin/python scripts/airflow_supervisor.py [--port 8080] [--host 127.0.0.1]

Airflow runs on SQLite with the LocalExecutor, its home inside ``$SECURETRANSCRIBE_HOME/airflow``.
The supervisor takes the data root's lock (a second supervisor on the same data root refuses), migrates
the database, loads the pools (``gpu`` slots = GPUs found; without one ``cpu_heavy_tasks``, the cores
split between them), starts the components, unpauses the DAGs, prints the UI address, the generated
admin password and the inbox path, and stays in the foreground. On Ctrl-C or SIGTERM it stops every
process it started (SIGTERM, then SIGKILL after a grace period). A component that dies is restarted
(at most 5 times in 10 minutes).

Listeners: the api-server and the two log servers (task logs, trigger logs: run here instead of
Airflow's own serve-logs, which binds every interface) bind ``--host`` (127.0.0.1 by default).

No orphans: each component runs under a guard (this script with ``--guard``) that leads the
component's session, gets SIGTERM when the supervisor dies however it dies (PR_SET_PDEATHSIG, so also
after SIGKILL), and then stops every process of that session (task processes included), SIGKILL after
the grace period. The guards hold the data root's lock until their session is empty.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
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

from tasks.devices import cpu_threads, cuda_device_count, heavy_task_slots
from tasks.settings import Settings

ROOT = Path(__file__).resolve().parent.parent

DAG_IDS = ("securetranscribe_inbox", "securetranscribe_process", "securetranscribe_process_batch",
           "securetranscribe_archive")
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
GRACE_S = 30.0
LOCK_NAME = "supervisor.lock"
PR_SET_PDEATHSIG = 1


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
        # how long an idle scheduler loop sleeps: also the wait between one task's end and the next one's
        # start (0.25 s: jfk.flac drop → outputs 11.5 s instead of 13.4 s; the idle stack uses ~16 % of a core
        # instead of ~12 %, docs/benchmarks.md); a value in the environment wins
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": os.environ.get("AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME",
                                                                        "0.25"),
        # log servers next to the UI port, so two deployments on one host do not clash; they bind --host
        # (ours, see log_server_commands; Airflow's own serve-logs binds every interface)
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
    """include/pools.json with the gpu slots filled in for this machine: one per GPU, else cpu_heavy_tasks."""
    spec = json.loads((ROOT / "include" / "pools.json").read_text(encoding="utf-8"))
    spec["gpu"]["slots"] = heavy_task_slots(settings.cpu_heavy_tasks)
    out = settings.home / "airflow" / "pools.generated.json"
    out.write_text(json.dumps(spec, indent=2), encoding="utf-8")
    return out


def split_cpu(settings: Settings) -> Settings:
    """Without a GPU, ``cpu_threads`` auto (0) becomes the cores split between the pool's heavy tasks."""
    if settings.cpu_threads > 0 or cuda_device_count() > 0:
        return settings
    return settings.replace(cpu_threads=cpu_threads(0, share=heavy_task_slots(settings.cpu_heavy_tasks)))


def log_server_commands(env: dict[str, str], host: str) -> dict[str, list[str]]:
    """The task and trigger log servers, bound to ``host`` (Airflow's serve-logs has no host option)."""
    python = str(Path(__file__).resolve())
    return {name: [sys.executable, python, "--serve-logs", env[var], "--host", host]
            for name, var in (("worker-log-server", "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"),
                              ("trigger-log-server", "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"))}


def serve_logs(port: int, host: str) -> None:
    """Airflow's log server app (signed requests only), on ``host:port``."""
    import uvicorn

    uvicorn.run("airflow.utils.serve_logs.log_server:get_app", host=host, port=port, log_config=None,
                access_log=False)


def die_with_parent(sig: int = signal.SIGTERM, parent: int | None = None) -> None:
    """Get ``sig`` when the parent process dies, however it dies (Linux); exit if it already has."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if parent is not None and os.getppid() != parent:
        os._exit(1)


def take_lock(home: Path) -> int:
    """Lock the data root for this supervisor (the file descriptor, passed on to the guards)."""
    path = home / "airflow" / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise SystemExit(f"SecureTranscribe is already running on the data root {home} (supervisor pid {holder}; "
                         f"lock {path}). Stop it first (Ctrl-C in its terminal), or use another data root: "
                         "SECURETRANSCRIBE_HOME=/other/folder make run") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def session_members(sid: int) -> list[int]:
    """Live processes of session ``sid`` other than this one (from /proc; zombies are already gone)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()  # state ppid pgrp session …
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] not in (b"Z", b"X"):
            found.append(int(entry))
    return found


def guard(cmd: list[str], parent: int) -> int:
    """Run ``cmd`` in this session (led by the guard); stop the whole session when asked or orphaned.

    SIGTERM (from the supervisor, or from the kernel when the supervisor died): every process of the
    session gets SIGTERM, the component has the grace period to stop, then what is left gets SIGKILL.
    """
    sid = os.getsid(0)
    me = os.getpid()
    stopping: list[float] = []

    def terminate_session() -> None:
        for pid in session_members(sid):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def on_signal(signum: int, _frame: object) -> None:
        if not stopping:
            stopping.append(time.monotonic())
            terminate_session()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    die_with_parent(signal.SIGTERM, parent)
    proc = subprocess.Popen(cmd, preexec_fn=lambda: die_with_parent(signal.SIGTERM, me))
    if stopping:  # asked to stop while the component was starting
        terminate_session()
    while proc.poll() is None:
        if stopping and time.monotonic() - stopping[0] > GRACE_S:
            break
        time.sleep(0.2)
    # the component is gone (or past the grace period): nothing of its session may outlive the guard
    deadline = time.monotonic() + (5.0 if proc.poll() is not None and not stopping else 0.0)
    while [p for p in session_members(sid) if p != proc.pid] and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in session_members(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    code = proc.wait()
    deadline = time.monotonic() + 10.0
    while session_members(sid) and time.monotonic() < deadline:  # SIGKILL is not instant
        time.sleep(0.1)
    return code


@dataclass
class Component:
    name: str
    cmd: list[str]
    log: Path
    proc: subprocess.Popen | None = None
    restarts: list[float] = field(default_factory=list)

    def start(self, env: dict[str, str], lock_fd: int | None = None) -> None:
        """Start the component under its guard, in a new session; the guard holds the data root's lock."""
        fh = open(self.log, "ab")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--guard", str(os.getpid()), "--", *self.cmd]
        self.proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                                     pass_fds=() if lock_fd is None else (lock_fd,))
        fh.close()

    def signal(self, sig: int) -> None:
        """SIGTERM: to the guard, which stops its session; SIGKILL: the guard's whole process group."""
        if self.proc and self.proc.poll() is None:
            try:
                if sig == signal.SIGKILL:
                    os.killpg(self.proc.pid, sig)
                else:
                    os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass


class Supervisor:
    def __init__(self, settings: Settings, port: int, host: str, lock_fd: int | None = None) -> None:
        self.settings = settings
        self.port = port
        self.lock_fd = lock_fd
        self.env = airflow_env(settings, port, host)
        self.home = Path(self.env["AIRFLOW_HOME"])
        logs = self.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        airflow = str(Path(sys.executable).parent / "airflow")
        cmds = {n: [airflow, n] + (["--skip-serve-logs"] if n in ("scheduler", "triggerer") else [])
                for n in COMPONENTS}
        if settings.preload_libraries:  # task processes are forked from the scheduler: libraries imported once
            cmds["scheduler"] = [sys.executable, str(Path(__file__).with_name("airflow_preloaded.py")),
                                 *cmds["scheduler"][1:]]
        cmds.update(log_server_commands(self.env, host))
        self.components = [Component(n, cmd, logs / f"{n}.log") for n, cmd in cmds.items()]
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
            c.start(self.env, self.lock_fd)

    def stop(self) -> int:
        """SIGTERM every process group, then SIGKILL what is left after the grace period."""
        if self.stopping:
            return 0
        self.stopping = True
        t0 = time.monotonic()
        for c in self.components:
            c.signal(signal.SIGTERM)
        pending = [c for c in self.components if c.proc and c.proc.poll() is None]
        while pending and time.monotonic() - t0 < GRACE_S + 10:  # the guards escalate after GRACE_S
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
            c.start(self.env, self.lock_fd)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--guard"]:  # a component's guard: --guard <supervisor pid> -- <command …>
        return guard(argv[3:], int(argv[1]))
    if argv[:1] == ["--serve-logs"]:  # a log server: --serve-logs <port> --host <address>
        serve_logs(int(argv[1]), argv[3])
        return 0
    settings = Settings.from_env()  # SECURETRANSCRIBE_PORT / _HOST give the defaults of --port / --host
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=settings.port,
                        help=f"port of the UI and API (default: {settings.port})")
    parser.add_argument("--host", default=settings.host,
                        help=f"address the UI listens on (default: {settings.host}; 127.0.0.1 is this machine only)")
    parser.add_argument("--ready-timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    settings = settings.replace(port=args.port, host=args.host)  # what the children see in SECURETRANSCRIBE_*
    settings = split_cpu(settings)

    os.umask(0o027)  # inherited by every Airflow process: data files 0640, folders 0750 at most
    lock_fd = take_lock(settings.home)
    sup = Supervisor(settings, args.port, args.host, lock_fd)

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
    # READY means every DAG can be triggered (a run of an unparsed one is a 404): they appear once parsed
    unpaused = sup.unpause()
    while len(unpaused) < len(DAG_IDS) and time.monotonic() < deadline:
        time.sleep(2.0)
        unpaused = sup.unpause()
    if missing := [d for d in DAG_IDS if d not in unpaused]:
        print(f"not parsed after {args.ready_timeout:.0f} s (see the dag-processor's log): {', '.join(missing)}")
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
