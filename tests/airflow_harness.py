"""Start the real embedded Airflow (scripts/airflow_supervisor.py, i.e. `make run`) for end-to-end tests.

    with running_airflow(tmp_path, SECURETRANSCRIBE_MODEL="tiny.en") as af:
        (af.settings_home / "inbox" / "a.flac").write_bytes(...)
        runs = af.wait_for_runs("securetranscribe_process", count=1)

Every wait polls a condition with a deadline (no sleeping as synchronisation).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TERMINAL = {"success", "failed"}


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the test process dies, however it dies (Linux prctl)."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition: Callable[[], Any], timeout: float, interval: float = 1.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class Airflow:
    """A running supervisor (api-server, scheduler, dag-processor, triggerer) and its REST API."""

    def __init__(self, home: Path, port: int, proc: subprocess.Popen, log: Path) -> None:
        self.settings_home = home
        self.home = home / "airflow"
        self.port = port
        self.proc = proc
        self.log = log
        self._token: str | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def password(self) -> str:
        return json.loads((self.home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]

    def token(self) -> str:
        if self._token is None:
            body = json.dumps({"username": "admin", "password": self.password()}).encode()
            req = urllib.request.Request(f"{self.base}/auth/token", data=body,
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                self._token = json.load(r)["access_token"]
        return self._token

    def api(self, method: str, path: str, body: Any = None) -> Any:
        req = urllib.request.Request(
            f"{self.base}/api/v2{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.token()}"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
        return json.loads(raw) if raw else None

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns?limit=500&order_by=run_after")["dag_runs"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        from urllib.parse import quote

        return self.api("GET", f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances?limit=500")[
            "task_instances"]

    def explain(self, dag_id: str, runs: list[dict[str, Any]], lines: int = 25) -> str:
        """For an assertion message: each run's state, its task instances' states and tries, and the last
        ``lines`` lines of every try of a task that did not succeed (and of the scheduler's log)."""
        out = []
        for run in runs:
            out.append(f"run {run['dag_run_id']}: {run['state']}")
            for ti in self.task_instances(dag_id, run["dag_run_id"]):
                name = ti["task_id"] + (f"[{ti['map_index']}]" if ti.get("map_index", -1) >= 0 else "")
                out.append(f"  {name}: {ti['state']} (try {ti.get('try_number')})")
                if ti["state"] in ("success", "skipped"):
                    continue
                folder = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run['dag_run_id']}" / \
                    f"task_id={ti['task_id']}"
                for log in sorted(folder.rglob("attempt=*.log")):
                    tail = log.read_text(errors="replace").splitlines()[-lines:]
                    out.append(f"  --- {log.relative_to(folder)} ---\n    " + "\n    ".join(tail))
        out.append(self.tail(lines))
        return "\n".join(out)

    def trigger(self, dag_id: str, conf: dict[str, Any], run_id: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"logical_date": None, "conf": conf}
        if run_id:
            body["dag_run_id"] = run_id
        return self.api("POST", f"/dags/{dag_id}/dagRuns", body)

    def wait_for_runs(self, dag_id: str, count: int, timeout: float = 600.0,
                      finished: bool = True) -> list[dict[str, Any]]:
        """At least ``count`` runs of ``dag_id`` exist (and all are finished, when asked)."""
        def ready() -> list[dict[str, Any]] | None:
            runs = self.runs(dag_id)
            if len(runs) < count:
                return None
            if finished and any(r["state"] not in TERMINAL for r in runs):
                return None
            return runs

        return wait_until(ready, timeout, 2.0, f"{count} finished run(s) of {dag_id}")

    def tail(self, n: int = 60) -> str:
        lines = []
        for name in ("scheduler", "dag-processor", "triggerer", "api-server"):
            path = self.home / "logs" / f"{name}.log"
            if path.exists():
                lines.append(f"--- {name} ---\n" + "\n".join(path.read_text(errors="replace").splitlines()[-n:]))
        return "\n".join(lines)


@contextmanager
def running_airflow(tmp_path: Path, timeout: float = 300.0, **env: str) -> Iterator[Airflow]:
    """Start `scripts/airflow_supervisor.py` with its own data home and port; stop it (SIGTERM) after."""
    home = tmp_path / "home"
    port = free_port()
    log = tmp_path / "supervisor.log"
    full_env = {**os.environ, "SECURETRANSCRIBE_HOME": str(home), "PYTHONUNBUFFERED": "1", **env}
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "airflow_supervisor.py"), "--port", str(port)],
                                env=full_env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_die_with_parent)
    af = Airflow(home, port, proc, log)
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"supervisor exited with {proc.returncode}:\n{log.read_text()}")
            return "READY" in log.read_text()

        wait_until(ready, timeout, 1.0, "Airflow to start")
        yield af
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
