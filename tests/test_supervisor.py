"""The embedded deployment (`make run`): loopback listeners, one supervisor per data root, no orphans.

One real supervisor (the harness), then: every listening socket of its process tree is on 127.0.0.1; the
scheduler runs with the heavy libraries already imported (``scripts/airflow_preloaded.py``); a second
supervisor on the same data root refuses; after SIGKILL of the supervisor (as the OOM killer would), no
process is left with the data root in its command line or environment.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil
import pytest

from tests.airflow_harness import ROOT, running_airflow, wait_until

pytestmark = pytest.mark.slow


def tree(pid: int) -> list[psutil.Process]:
    try:
        parent = psutil.Process(pid)
        return [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cmdline(p: psutil.Process) -> list[str]:
    """``p``'s command line; empty for a process that is gone or a zombie not yet reaped by its parent."""
    try:
        return p.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):  # ZombieProcess is a NoSuchProcess
        return []


def listening(procs: list[psutil.Process]) -> set[tuple[str, int, str]]:
    """(address, port, process name) of every listening TCP socket of ``procs``."""
    found = set()
    for p in procs:
        try:
            for c in p.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN:
                    found.add((c.laddr.ip, c.laddr.port, p.name()))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def using(home: str) -> list[str]:
    """Processes (other than this test) whose command line or environment names the data root."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        if p.pid == os.getpid():
            continue
        try:
            if home in " ".join(p.info["cmdline"] or []) or any(home in v for v in p.environ().values()):
                found.append(f"{p.pid} {' '.join(p.info['cmdline'] or [])[:120]}")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def test_loopback_listeners_one_supervisor_per_data_root_and_no_orphans(tmp_path):
    with running_airflow(tmp_path, SECURETRANSCRIBE_MODEL="tiny.en") as af:
        home = str(af.settings_home)
        ports = {af.port, af.port + 713, af.port + 714}  # UI/API, task log server, trigger log server

        def all_listening() -> set[tuple[str, int, str]] | None:
            found = listening(tree(af.proc.pid))
            return found if ports <= {port for _, port, _ in found} else None

        sockets = wait_until(all_listening, 120, 1.0, "the api-server and both log servers to listen")
        assert {addr for addr, _, _ in sockets} == {"127.0.0.1"}, sockets

        # the scheduler (the parent of every task process) started with torch and pyannote.audio imported
        guard = [p for p in tree(af.proc.pid) if {"--guard", "scheduler"} <= set(cmdline(p))]
        assert len(guard) == 1 and "airflow_preloaded.py" in " ".join(cmdline(guard[0])), guard
        scheduler = guard[0].children()  # the guard runs the component as its only child

        def preloaded() -> set[str] | None:  # the scheduler imports them before Airflow starts its loop
            mapped = {os.path.basename(m.path) for m in scheduler[0].memory_maps()}
            return mapped if any(name.startswith("libctranslate2") for name in mapped) else None

        mapped = wait_until(preloaded, 120, 1.0, "the scheduler to import the libraries")
        assert any(name.startswith("libtorch_cpu") for name in mapped), sorted(mapped)

        # a second `make run` on the same data root refuses, and says why
        second = subprocess.run([sys.executable, str(ROOT / "scripts" / "airflow_supervisor.py"), "--port",
                                 str(af.port + 1)], env={**os.environ, "SECURETRANSCRIBE_HOME": home},
                                capture_output=True, text=True, timeout=120)
        assert second.returncode != 0
        assert "already running on the data root" in second.stderr and home in second.stderr, second.stderr
        assert af.proc.poll() is None and all_listening()  # the first one is untouched

        assert using(home)  # the check below sees the components while they run
        af.proc.send_signal(signal.SIGKILL)
        af.proc.wait()
        try:
            wait_until(lambda: not using(home), 120, 1.0, "every component to stop")
        except TimeoutError:
            pytest.fail(f"left running after the supervisor was killed: {using(home)}")
