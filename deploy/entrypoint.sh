#!/bin/bash
# Container entrypoint (under tini): `init` prepares the deployment, anything else is exec'd as given.
#
#   init     run as root: create the data folders and give them to AIRFLOW_UID, then, as that user,
#            deploy/init_airflow.py --verify-models (db migrate, pools, admin password, metrics
#            database, model check). Idempotent.
#   airflow … / celery … / bash …   exec'd as is (the image's user).
set -euo pipefail
umask 0027

APP=/opt/securetranscribe
uid="${AIRFLOW_UID:-50000}"

if [[ "${1:-}" == "init" ]]; then
  shift
  if [[ "$(id -u)" == "0" ]]; then
    home="${SECURETRANSCRIBE_HOME:-/data}"
    mkdir -p "$home"/{inbox,outbox,archive,quarantine,work} "${AIRFLOW_HOME:-/opt/airflow}"/{logs,secrets}
    # the top folders only: never walk through users' archives
    chown "$uid:0" "$home" "$home"/{inbox,outbox,archive,quarantine,work} \
      "${AIRFLOW_HOME:-/opt/airflow}"/{logs,secrets} "${SECURETRANSCRIBE_MODELS_DIR:-$APP/models}"
    chmod 0750 "${AIRFLOW_HOME:-/opt/airflow}/secrets"
    exec setpriv --reuid="$uid" --regid=0 --clear-groups \
      python "$APP/deploy/init_airflow.py" --verify-models "$@"
  fi
  exec python "$APP/deploy/init_airflow.py" --verify-models "$@"
fi

exec "$@"
