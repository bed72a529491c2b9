"""Airflow 3 plugin: a "Transcription metrics" page in the Airflow UI.

The FastAPI app of :mod:`tasks.metrics.web` is mounted under the api-server at ``/securetranscribe-metrics``
and shown inside the UI (left navigation) through an external view with a ``url_route`` (an iframe at
``/plugin/transcription-metrics``). Every route except the icon requires an Airflow login: the UI's
``_token`` cookie or an ``Authorization: Bearer`` token, checked by the configured auth manager
(``securetranscribe_airflow.auth``, shared with the Transcripts view).
The page reads the metrics database of the settings (``SECURETRANSCRIBE_METRICS_URL`` /
``SECURETRANSCRIBE_HOME``) and serves the outbox's exports read-only.
"""

from __future__ import annotations

from typing import Any, ClassVar

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI
from securetranscribe_airflow.auth import nav_view, require_airflow_user, serve_icon

URL_PREFIX = "/securetranscribe-metrics"
ICON = """<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="#4a90d9"
stroke-width="2" stroke-linecap="round"><path d="M4 20V10M10 20V4M16 20v-7M22 20H2"/></svg>"""


def build_app() -> FastAPI:
    from tasks.metrics.web import create_app

    app = create_app(dependencies=[Depends(require_airflow_user)])

    serve_icon(app, ICON)

    return app


class TranscriptionMetricsPlugin(AirflowPlugin):
    name = "transcription_metrics"
    fastapi_apps: ClassVar[list[dict[str, Any]]] = [
        {"app": build_app(), "url_prefix": URL_PREFIX, "name": "Transcription metrics"}]
    external_views: ClassVar[list[dict[str, Any]]] = [
        nav_view("Transcription metrics", URL_PREFIX, "transcription-metrics")]
