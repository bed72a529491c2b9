"""The scale-out deployment files, checked without a Docker engine or a cluster.

- docker-compose.airflow.yml: `docker compose config` with a generated .env, then the resolved model:
  services, health checks, GPU reservations and queues, shared secrets and volumes.
- deploy/make_env.py, deploy/postgres/init-metrics-db.sh (against a real PostgreSQL), entrypoint syntax.
- deploy/helm/values-gpu.yaml: YAML syntax and the GPU worker set (untested on a cluster).
- The Celery pins that Airflow 3.3.2's CeleryExecutor needs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.servers import postgres_or_skip

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.airflow.yml"
AIRFLOW_SERVICES = {"airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-triggerer", "cpu-worker", "gpu-worker-0"}
SECRETS = ("AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY", "AIRFLOW_ADMIN_PASSWORD",
           "POSTGRES_PASSWORD", "METRICS_DB_PASSWORD", "REDIS_PASSWORD")


def compose_command() -> list[str]:
    """`docker compose` (v2 plugin) or `docker-compose`; a loud skip when neither exists."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    reason = ("docker-compose.airflow.yml NOT VALIDATED: no `docker compose` here "
              + ("(the docker CLI lacks the compose plugin: `make compose-cli`)" if shutil.which("docker")
                 else "(no docker CLI)"))
    warnings.warn(reason, stacklevel=2)
    pytest.skip(reason)


def make_env(path: Path, *extra: str) -> dict[str, str]:
    subprocess.run([str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").is_dir() else "python3",
                    str(ROOT / "deploy" / "make_env.py"), str(path), "--force", *extra],
                   check=True, capture_output=True, text=True)
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))


def compose_config(env_file: Path, *profiles: str) -> dict[str, Any]:
    args = [a for p in profiles for a in ("--profile", p)]
    done = subprocess.run([*compose_command(), "-f", str(COMPOSE_FILE), "--env-file", str(env_file), *args,
                           "config", "--format", "json"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("compose") / ".env"


@pytest.fixture(scope="module")
def env(env_file: Path) -> dict[str, str]:
    return make_env(env_file)


@pytest.fixture(scope="module")
def config(env_file: Path, env: dict[str, str]) -> dict[str, Any]:
    return compose_config(env_file)


def test_compose_config_validates_with_a_generated_env(config: dict[str, Any]) -> None:
    services = set(config["services"])
    assert services == AIRFLOW_SERVICES | {"postgres", "redis"}, services  # gpu-worker-1, flower: profiles


def test_every_long_running_service_has_a_healthcheck(config: dict[str, Any]) -> None:
    for name, svc in config["services"].items():
        if name == "airflow-init":  # one-shot: the others wait for service_completed_successfully
            assert svc["restart"] == "no"
            continue
        check = svc.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
    for name in AIRFLOW_SERVICES - {"airflow-init"}:
        deps = config["services"][name]["depends_on"]
        assert deps["airflow-init"]["condition"] == "service_completed_successfully", name
        assert deps["postgres"]["condition"] == deps["redis"]["condition"] == "service_healthy", name


def _command(svc: dict[str, Any]) -> str:
    return " ".join(svc.get("command") or [])


def _gpu_workers(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in config["services"].items() if "--queues gpu" in _command(s)}


@pytest.mark.parametrize("profiles, gpus", [((), 1), (("gpu2",), 2)])
def test_one_gpu_worker_per_gpu_on_queue_gpu_and_pool_slots_match(env_file: Path, env: dict[str, str],
                                                                  profiles: tuple[str, ...], gpus: int,
                                                                  tmp_path: Path) -> None:
    sized = tmp_path / ".env"
    make_env(sized, "--set", f"SECURETRANSCRIBE_GPU_SLOTS={gpus}")
    config = compose_config(sized, *profiles)
    workers = _gpu_workers(config)
    assert len(workers) == gpus
    devices = []
    for name, svc in workers.items():
        assert "--concurrency 1" in _command(svc), name
        assert svc["environment"]["CUDA_VISIBLE_DEVICES"] == "0", name  # the reserved GPU, seen from inside
        reservation = svc["deploy"]["resources"]["reservations"]["devices"]
        assert len(reservation) == 1 and reservation[0]["driver"] == "nvidia", name
        assert reservation[0]["capabilities"] == ["gpu"], name
        devices += reservation[0]["device_ids"]
        assert svc["hostname"] == name
    assert len(set(devices)) == gpus, f"GPU workers share a GPU: {devices}"
    init_env = config["services"]["airflow-init"]["environment"]
    assert int(init_env["SECURETRANSCRIBE_GPU_SLOTS"]) == gpus == len(workers)


def test_cpu_worker_takes_the_default_queue_without_gpu(config: dict[str, Any]) -> None:
    cpu = config["services"]["cpu-worker"]
    assert "--queues default" in _command(cpu)
    assert cpu["environment"]["CUDA_VISIBLE_DEVICES"] == ""
    assert "deploy" not in cpu or not cpu["deploy"].get("resources", {}).get("reservations")


def test_components_share_secrets_databases_and_volumes(config: dict[str, Any], env: dict[str, str]) -> None:
    envs = {n: config["services"][n]["environment"] for n in AIRFLOW_SERVICES}
    shared = ("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY",
              "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__BROKER_URL", "AIRFLOW__CELERY__RESULT_BACKEND",
              "AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "SECURETRANSCRIBE_METRICS_URL", "SECURETRANSCRIBE_HOME")
    for key in shared:
        values = {e[key] for e in envs.values()}
        assert len(values) == 1, f"{key} differs between services"
    one = envs["airflow-scheduler"]
    assert one["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert one["AIRFLOW__CORE__FERNET_KEY"] == env["AIRFLOW_FERNET_KEY"]
    assert one["AIRFLOW__API_AUTH__JWT_SECRET"] == env["AIRFLOW_JWT_SECRET"]
    assert one["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert one["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg://airflow:")
    assert one["AIRFLOW__CELERY__BROKER_URL"] == f"redis://:{env['REDIS_PASSWORD']}@redis:6379/0"
    assert one["SECURETRANSCRIBE_METRICS_URL"].endswith("@postgres:5432/securetranscribe_metrics")
    for name in AIRFLOW_SERVICES:
        targets = {v["target"] for v in config["services"][name]["volumes"]}
        assert {"/data", "/data/inbox", "/data/outbox", "/data/archive", "/opt/securetranscribe/models",
                "/opt/airflow/logs"} <= targets, name
    assert config["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == env["POSTGRES_PASSWORD"]


def test_no_secret_in_the_committed_files(env: dict[str, str]) -> None:
    text = COMPOSE_FILE.read_text()
    for key in SECRETS:
        assert f"${{{key}" in text, f"{key} is not taken from .env"
        assert env[key] not in text
    literal = r"(?im)(password|secret|fernet)[a-z_]*:\s*['\"]?[A-Za-z0-9+=_-]{12,}['\"]?\s*$"
    assert re.search(literal, text) is None, "a literal secret in docker-compose.airflow.yml"
    example = (ROOT / ".env.example").read_text()
    for key in SECRETS:
        assert re.search(rf"^{key}=CHANGE_ME$", example, re.M), key
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT)
    assert ignored.returncode == 0, ".env must be git-ignored"


def test_compose_refuses_to_start_without_secrets(tmp_path: Path) -> None:
    empty = tmp_path / ".env"
    empty.write_text("SECURETRANSCRIBE_GPU_SLOTS=1\n")
    done = subprocess.run([*compose_command(), "-f", str(COMPOSE_FILE), "--env-file", str(empty), "config", "-q"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode != 0
    assert "required variable" in done.stderr and "is missing a value" in done.stderr, done.stderr


def test_make_env_writes_fresh_private_secrets_and_never_overwrites(tmp_path: Path) -> None:
    from cryptography.fernet import Fernet

    first, second = make_env(tmp_path / "a.env"), make_env(tmp_path / "b.env")
    assert stat.S_IMODE((tmp_path / "a.env").stat().st_mode) == 0o600
    for key in SECRETS:
        assert first[key] and first[key] != "CHANGE_ME" and first[key] != second[key], key
        assert re.fullmatch(r"[A-Za-z0-9_=-]+", first[key]), f"{key} is not URL-safe"
    Fernet(first["AIRFLOW_FERNET_KEY"].encode())  # a valid key
    again = subprocess.run(["python3", str(ROOT / "deploy" / "make_env.py"), str(tmp_path / "a.env")],
                           capture_output=True, text=True)
    assert again.returncode == 1 and "not overwriting" in again.stderr


def test_postgres_init_script_creates_the_metrics_database() -> None:
    """deploy/postgres/init-metrics-db.sh as the postgres image runs it, against a real server."""
    import psycopg

    psql = next((str(p / "psql") for p in sorted(Path("/usr/lib/postgresql").glob("*/bin")) if (p / "psql").exists()),
                shutil.which("psql"))
    if psql is None:
        pytest.skip("psql NOT FOUND: init-metrics-db.sh not run (Debian: postgresql-client)")
    with postgres_or_skip() as pg:
        env = {**os.environ, "PATH": f"{Path(psql).parent}:{os.environ['PATH']}", "POSTGRES_USER": pg.user,
               "POSTGRES_DB": "postgres", "PGHOST": pg.host, "PGPORT": str(pg.port), "PGPASSWORD": pg.password,
               "METRICS_DB_PASSWORD": "m3trics-pw"}
        done = subprocess.run(["bash", str(ROOT / "deploy" / "postgres" / "init-metrics-db.sh")], env=env,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        url = f"postgresql://securetranscribe:m3trics-pw@{pg.host}:{pg.port}/securetranscribe_metrics"
        with psycopg.connect(url) as conn:
            conn.execute("CREATE TABLE probe (id int)")  # the role owns its database
            assert conn.execute("SELECT current_user").fetchone() == ("securetranscribe",)


def test_entrypoint_and_init_scripts_parse() -> None:
    for script in ("deploy/entrypoint.sh", "deploy/postgres/init-metrics-db.sh"):
        done = subprocess.run(["bash", "-n", str(ROOT / script)], capture_output=True, text=True)
        assert done.returncode == 0, (script, done.stderr)
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:12\.\S+-cudnn-runtime-", dockerfile, re.M)
    assert "-r requirements.txt -c requirements.lock" in dockerfile
    assert "securetranscribe models fetch" in dockerfile and "securetranscribe models verify" in dockerfile


def test_celery_stack_is_pinned_to_what_works_with_airflow_332() -> None:
    """celery 5.7.0 breaks Airflow 3.3.2's CeleryExecutor (`cannot import name 'retry' from
    'celery.backends.database'`); 5.6.3 works. Both requirement files must keep it."""
    reqs = (ROOT / "requirements.txt").read_text()
    lock = (ROOT / "requirements.lock").read_text()
    assert re.search(r"^celery\[redis\]==5\.6\.3$", reqs, re.M)
    assert re.search(r"^celery==5\.6\.3$", lock, re.M)
    assert re.search(r"^apache-airflow-providers-celery==", lock, re.M)
    from airflow.providers.celery.executors.celery_executor import CeleryExecutor  # the import that 5.7 breaks

    assert CeleryExecutor.__name__ == "CeleryExecutor"


def test_helm_values_give_gpu_workers_gpus_and_are_marked_untested() -> None:
    path = ROOT / "deploy" / "helm" / "values-gpu.yaml"
    text = path.read_text()
    assert "UNTESTED ON A CLUSTER" in text
    values = yaml.safe_load(text)
    assert values["executor"] == "CeleryExecutor"
    celery = values["workers"]["celery"]
    assert celery["queue"] == "default" and celery["enableDefault"] is True
    (gpu,) = [s for s in celery["sets"] if s["queue"] == "gpu"]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in gpu["tolerations"])
    assert "--concurrency 1" in " ".join(gpu["args"])
    slots = {e["name"]: e["value"] for e in values["migrateDatabaseJob"]["env"]}["SECURETRANSCRIBE_GPU_SLOTS"]
    assert int(slots) == gpu["replicas"], "the gpu pool's slots must equal the GPU worker replicas"
