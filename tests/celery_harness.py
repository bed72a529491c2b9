"""The scaled-out topology of docker-compose.airflow.yml, started natively for tests (no Docker engine).

    with redis_or_skip() as redis, postgres_or_skip() as pg:
        with celery_cluster(tmp_path, pg, redis, SECURETRANSCRIBE_MODEL="tiny.en") as cluster:
            cluster.start_worker("gpu")     # airflow celery worker --queues gpu --concurrency 1
            cluster.start_worker("cpu")     # airflow celery worker --queues default
            ...cluster.runs("securetranscribe_process")...

Real PostgreSQL (Airflow metadata, Celery results, metrics) and Redis (Celery broker) on 127.0.0.1,
`deploy/init_airflow.py` (the compose init service), then api-server, scheduler, dag-processor,
triggerer and Celery workers as separate processes, each in its own process group with its own log.
Several workers on one host get distinct log-server ports and distinct task-instance hostnames
(`deploy/airflow_hostname.py`). Every wait polls with a deadline.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.airflow_harness import Airflow, free_port, wait_until
from tests.servers import PostgresServer, ServerUnavailable

ROOT = Path(__file__).resolve().parent.parent
ADMIN_PASSWORD = "celery-test-admin"
WORKERS = {  # name -> (queue, concurrency); one GPU worker per GPU, concurrency 1
    "gpu": ("gpu", 1),
    "cpu": ("default", 2),
}


def worker_hostname(name: str) -> str:
    """The hostname task instances record for the worker ``name`` (gpu -> gpu-worker)."""
    return f"{name}-worker"


@dataclass
class RedisServer:
    host: str
    port: int
    password: str

    def url(self, db: int = 0) -> str:
        return f"redis://:{self.password}@{self.host}:{self.port}/{db}"


@contextmanager
def redis_server(timeout: float = 30.0) -> Iterator[RedisServer]:
    """Start redis-server on 127.0.0.1:<free port> with a password and no persistence; stop it after."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServerUnavailable("redis-server not found (Debian: apt-get install redis-server)")
    root = Path(tempfile.mkdtemp(prefix="st-redis-"))
    server = RedisServer("127.0.0.1", free_port(), secrets.token_hex(16))
    conf = root / "redis.conf"
    conf.write_text(
        f"bind 127.0.0.1\nport {server.port}\nrequirepass {server.password}\ndir {root}\n"
        'save ""\nappendonly no\nprotected-mode yes\ndaemonize no\nlogfile ""\n'
    )
    conf.chmod(0o600)
    log = open(root / "redis.log", "wb")
    proc = subprocess.Popen([binary, str(conf)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        import redis

        client = redis.Redis(host=server.host, port=server.port, password=server.password, socket_timeout=2)

        def ready() -> bool:
            if proc.poll() is not None:
                raise ServerUnavailable(f"redis-server exited: {(root / 'redis.log').read_text()[-2000:]}")
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_until(ready, timeout, 0.2, "Redis")
        yield server
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def redis_or_skip(timeout: float = 30.0) -> Iterator[RedisServer]:
    """:func:`redis_server` for pytest: a loud skip (and a warning) when it cannot start."""
    import pytest

    try:
        cm = redis_server(timeout)
        server = cm.__enter__()
    except (ServerUnavailable, TimeoutError) as exc:
        reason = f"Redis NOT TESTED: cannot start a local server: {exc}"
        warnings.warn(reason, stacklevel=2)
        pytest.skip(reason)
    try:
        yield server
    finally:
        cm.__exit__(None, None, None)


def _supervisor_module() -> Any:
    spec = importlib.util.spec_from_file_location("airflow_supervisor", ROOT / "scripts" / "airflow_supervisor.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules.setdefault(spec.name, module)  # type: ignore[union-attr]  # dataclasses look it up
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def cluster_env(home: Path, port: int, pg: PostgresServer, redis: RedisServer, **extra: str) -> dict[str, str]:
    """The environment every component runs with: the embedded deployment's, switched to CeleryExecutor
    on PostgreSQL + Redis, with the secrets shared by all components (as the compose file does)."""
    from cryptography.fernet import Fernet

    from tasks.settings import Settings

    os.environ.setdefault("SECURETRANSCRIBE_MODEL", "tiny.en")
    settings = Settings.from_env({**os.environ, "SECURETRANSCRIBE_HOME": str(home), **extra})
    env = _supervisor_module().airflow_env(settings, port, "127.0.0.1")
    airflow_db = pg.create_database("airflow")
    metrics_db = pg.create_database("securetranscribe_metrics")
    env.update({
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__PARALLELISM": "8",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_db,
        # psycopg 3 is async-capable: no asyncpg needed for Airflow's async engine
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": airflow_db,
        "AIRFLOW__CELERY__BROKER_URL": redis.url(0),
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{airflow_db}",
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "airflow" / "secrets" / "passwords.json"),
        "AIRFLOW_ADMIN_PASSWORD": ADMIN_PASSWORD,
        # A worker that dies (SIGKILL, lost node) stops heartbeating: fail its task and retry it quickly.
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
        "SECURETRANSCRIBE_METRICS_URL": metrics_db,
        "SECURETRANSCRIBE_GPU_SLOTS": str(sum(1 for q, _ in WORKERS.values() if q == "gpu")),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "deploy"), str(ROOT)]),
        **extra,
    })
    env.pop("AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT", None)  # set per worker below
    return env


@dataclass
class Process:
    name: str
    cmd: list[str]
    log: Path
    env: dict[str, str]
    proc: subprocess.Popen | None = None
    starts: int = 0

    def start(self) -> None:
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=fh, stderr=subprocess.STDOUT,
                                         start_new_session=True, cwd=ROOT)
        self.starts += 1

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def killpg(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def kill_tree(self) -> list[int]:
        """SIGKILL the process group and every descendant, also those in their own process group
        (Airflow runs each task in a new group): what a crashed machine does. Returns their pids."""
        import psutil

        if self.proc is None:
            return []
        try:
            tree = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            tree = []
        self.killpg(signal.SIGKILL)
        for child in tree:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        self.proc.wait()
        psutil.wait_procs(tree, timeout=10)
        return [self.proc.pid, *(c.pid for c in tree)]

    def stop(self, grace: float = 30.0) -> None:
        if not self.alive():
            self.killpg(signal.SIGKILL)  # leftovers of a dead leader
            return
        self.killpg(signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)  # type: ignore[union-attr]
        except subprocess.TimeoutExpired:
            pass
        self.killpg(signal.SIGKILL)
        self.proc.wait()  # type: ignore[union-attr]


class CeleryCluster(Airflow):
    """Airflow's REST API helpers (tests.airflow_harness.Airflow) over the Celery topology."""

    def __init__(self, home: Path, port: int, env: dict[str, str], logs: Path) -> None:
        super().__init__(home, port, proc=None, log=logs)  # type: ignore[arg-type]
        self.home = Path(env["AIRFLOW_HOME"])
        self.env = env
        self.logs = logs
        self.processes = {}
        self.worker_ports: dict[str, int] = {}

    def password(self) -> str:
        return ADMIN_PASSWORD

    def airflow_bin(self) -> str:
        return str(Path(sys.executable).parent / "airflow")

    def start(self, name: str, args: list[str], **extra: str) -> Process:
        """Start (or restart) a component in its own process group; its output goes to logs/<name>.log."""
        p = self.processes.get(name)
        if p is None:
            p = Process(name, [self.airflow_bin(), *args], self.logs / f"{name}.log", {**self.env, **extra})
            self.processes[name] = p
        p.start()
        return p

    def start_worker(self, name: str) -> Process:
        """``airflow celery worker -q QUEUE -c N -H NAME@%h``, own log-server port, own TI hostname."""
        queue, concurrency = WORKERS[name]
        p = self.start(
            f"worker-{name}",
            ["celery", "worker", "--queues", queue, "--concurrency", str(concurrency),
             "--celery-hostname", f"{name}@%h", "--without-mingle", "--without-gossip"],
            AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(self.worker_ports.setdefault(name, free_port())),
            AIRFLOW__CORE__HOSTNAME_CALLABLE="airflow_hostname.worker_hostname",
            SECURETRANSCRIBE_WORKER_NAME=worker_hostname(name),
        )
        starts = p.starts

        def ready() -> bool:
            if not p.alive():
                raise RuntimeError(f"worker {name} exited:\n{self.tail_of(p.log)}")
            # celery prints "<name>@<host> ready." once it consumes; count the lines of this start
            return p.log.read_text(errors="replace").count(" ready.") >= starts

        wait_until(ready, 180, 1.0, f"Celery worker {name}")
        return p

    def healthy(self) -> bool:
        try:
            health = self.api("GET", "/monitor/health")
        except Exception:
            return False
        parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
        return all((health.get(p) or {}).get("status") == "healthy" for p in parts)

    def check_alive(self) -> None:
        for p in self.processes.values():
            if p.proc is not None and p.proc.poll() is not None and not p.name.startswith("worker-"):
                raise RuntimeError(f"{p.name} exited with {p.proc.returncode}:\n{self.tail_of(p.log)}")

    @staticmethod
    def tail_of(path: Path, n: int = 80) -> str:
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])

    def tail(self, n: int = 60) -> str:
        return "\n".join(f"--- {p.name} ---\n{self.tail_of(p.log, n)}" for p in self.processes.values())

    def stop(self) -> None:
        """Workers first (their task processes too), then the Airflow components."""
        import psutil

        for p in reversed(list(self.processes.values())):
            tree = []
            if p.alive():
                try:
                    tree = psutil.Process(p.proc.pid).children(recursive=True)  # type: ignore[union-attr]
                except psutil.NoSuchProcess:
                    pass
            p.stop()
            for child in tree:  # task runners live in their own process groups
                try:
                    child.kill()
                except psutil.NoSuchProcess:
                    pass


@contextmanager
def celery_cluster(tmp_path: Path, pg: PostgresServer, redis: RedisServer, workers: tuple[str, ...] = ("gpu", "cpu"),
                   timeout: float = 300.0, **extra: str) -> Iterator[CeleryCluster]:
    """init, then api-server, scheduler, dag-processor, triggerer and the named Celery workers."""
    home = tmp_path / "home"
    logs = tmp_path / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = cluster_env(home, port, pg, redis, **extra)
    init = subprocess.run([sys.executable, str(ROOT / "deploy" / "init_airflow.py")], env=env,
                          capture_output=True, text=True, cwd=ROOT)
    (logs / "init.log").write_text(init.stdout + init.stderr)
    if init.returncode != 0:
        raise RuntimeError(f"deploy/init_airflow.py failed:\n{init.stdout[-3000:]}\n{init.stderr[-3000:]}")
    cluster = CeleryCluster(home, port, env, logs)
    try:
        for component in ("api-server", "scheduler", "dag-processor", "triggerer"):
            cluster.start(component, [component])

        def healthy() -> bool:
            cluster.check_alive()
            return cluster.healthy()

        wait_until(healthy, timeout, 2.0, "Airflow components to report healthy")
        for name in workers:
            cluster.start_worker(name)
        yield cluster
    except BaseException:
        sys.stderr.write(cluster.tail())
        raise
    finally:
        cluster.stop()
