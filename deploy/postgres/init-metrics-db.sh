#!/bin/bash
# Runs once, when the postgres container initialises an empty data directory
# (/docker-entrypoint-initdb.d): the metrics database and its own role, next to the Airflow
# metadata database that POSTGRES_DB/POSTGRES_USER create. The schema itself is created by
# deploy/init_airflow.py (Alembic migrations of tasks/metrics).
set -euo pipefail
: "${METRICS_DB_PASSWORD:?METRICS_DB_PASSWORD must be set}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v metrics_password="$METRICS_DB_PASSWORD" <<'SQL'
CREATE ROLE securetranscribe LOGIN PASSWORD :'metrics_password';
CREATE DATABASE securetranscribe_metrics OWNER securetranscribe;
REVOKE ALL ON DATABASE securetranscribe_metrics FROM PUBLIC;
SQL
