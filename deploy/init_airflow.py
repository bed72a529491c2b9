"""One-shot initialisation of a scaled-out (CeleryExecutor) SecureTranscribe deployment.

    python deploy/init_airflow.py [--verify-models]

Run once before the Airflow components start (the ``airflow-init`` service of
docker-compose.airflow.yml, and the native Celery test harness): it is idempotent, so running it
again after an upgrade is safe.

1. creates the data folders under ``SECURETRANSCRIBE_HOME`` (inbox, outbox, archive, quarantine, work);
2. ``airflow db migrate`` on the metadata database (``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``);
3. imports the pools of include/pools.json with ``gpu`` slots = ``SECURETRANSCRIBE_GPU_SLOTS``
   (the number of GPUs across all GPU workers: one Celery worker per GPU, concurrency 1);
4. writes the admin password (``AIRFLOW_ADMIN_PASSWORD``) into the simple auth manager's password
   file (``AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE``), mode 0600;
5. creates or migrates the metrics database (``SECURETRANSCRIBE_METRICS_URL``, Alembic);
6. with ``--verify-models``: checks the model files against their pinned sha256.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tasks.settings import Settings  # noqa: E402


def gpu_slots(env: dict[str, str] | os._Environ[str] = os.environ) -> int:
    """``SECURETRANSCRIBE_GPU_SLOTS`` as a positive integer (the pool must match the GPU workers)."""
    raw = env.get("SECURETRANSCRIBE_GPU_SLOTS", "1").strip() or "1"
    try:
        slots = int(raw)
    except ValueError:
        raise SystemExit(f"SECURETRANSCRIBE_GPU_SLOTS={raw!r}: expected the number of GPU workers") from None
    if slots < 1:
        raise SystemExit("SECURETRANSCRIBE_GPU_SLOTS must be >= 1 (one slot per GPU worker)")
    return slots


def pools_spec(slots: int) -> dict:
    """include/pools.json with the gpu pool's slots set."""
    spec = json.loads((ROOT / "include" / "pools.json").read_text(encoding="utf-8"))
    spec["gpu"]["slots"] = slots
    return spec


def airflow(*args: str) -> None:
    cmd = [str(Path(sys.executable).parent / "airflow"), *args]
    if not Path(cmd[0]).exists():
        cmd[0] = "airflow"
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"`airflow {' '.join(args)}` failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def write_admin_password(path: Path, password: str, user: str = "admin") -> None:
    """The simple auth manager reads ``{"user": "password"}`` from this file (created 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(json.dumps({user: password}) + "\n")
    os.chmod(path, 0o600)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verify-models", action="store_true", help="check the model files' sha256")
    args = parser.parse_args(argv)

    settings = Settings.from_env()
    for folder in (settings.inbox, settings.outbox, settings.archive, settings.quarantine, settings.work):
        folder.mkdir(parents=True, exist_ok=True, mode=0o750)
    print(f"data folders ready under {settings.home}", flush=True)

    airflow("db", "migrate")
    print("Airflow metadata database migrated", flush=True)

    slots = gpu_slots()
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(pools_spec(slots), fh)
    try:
        airflow("pools", "import", fh.name)
    finally:
        os.unlink(fh.name)
    print(f"pool gpu: {slots} slot(s)", flush=True)

    password = os.environ.get("AIRFLOW_ADMIN_PASSWORD", "")
    password_file = os.environ.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", "")
    if password and password_file:
        write_admin_password(Path(password_file), password)
        print(f"admin password written to {password_file}", flush=True)

    from tasks.metrics import MetricsStore

    with MetricsStore(settings.metrics_database_url) as store:
        store.upgrade()
    print(f"metrics database at revision {MetricsStore(settings.metrics_database_url).current_revision()}",
          flush=True)

    if args.verify_models:
        from tasks import model_store

        states = model_store.verify(settings.models_dir)
        missing = [n for n, a in model_store.ARTEFACTS.items() if a.default and not states[n]]
        if missing:
            raise SystemExit(f"model files missing or corrupt in {settings.models_dir}: {', '.join(missing)}")
        print(f"model files verified in {settings.models_dir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
