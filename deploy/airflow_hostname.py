"""``[core] hostname_callable`` for several Celery workers on one host.

Airflow records on every task instance the hostname of the worker that ran it (``get_hostname()``,
by default the machine's FQDN). Containers each have their own hostname; workers started natively
on one machine do not, so set ``SECURETRANSCRIBE_WORKER_NAME`` per worker and

    PYTHONPATH=<repo>/deploy AIRFLOW__CORE__HOSTNAME_CALLABLE=airflow_hostname.worker_hostname

to tell them apart in the UI and the REST API (``taskInstances[].hostname``). The name must resolve
from the api-server if it is to stream logs of running tasks from that worker's log server.
"""

from __future__ import annotations

import os
import socket


def worker_hostname() -> str:
    """``SECURETRANSCRIBE_WORKER_NAME`` when set, else the FQDN (Airflow's default)."""
    return os.environ.get("SECURETRANSCRIBE_WORKER_NAME", "").strip() or socket.getfqdn()
