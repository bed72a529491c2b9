"""Airflow 3 plugin: the "Transcripts" view (read, play, search, name speakers) in the Airflow UI.

The FastAPI app of :mod:`tasks.transcripts.web` is mounted under the api-server at ``/securetranscribe-transcripts``
and shown inside the UI through an external view (an iframe at ``/plugin/transcripts``). Every route except
the icon requires an Airflow login (``securetranscribe_airflow.auth``, shared with the metrics page). Renames
queue a run of the ``securetranscribe_rename`` DAG (triggered in this process, as the REST API does, by the
user who saved, with a note saying what changed), so the re-export is retried, logged and in the run history.

Navigation order: the UI lists plugin views in the order of ``GET /api/v2/plugins``, which sorts plugins by
name; ``securetranscribe_transcripts`` sorts before ``transcription_metrics``, so "Transcripts" comes first.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, ClassVar

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, Request
from securetranscribe_airflow.auth import nav_view, require_airflow_user, serve_icon

URL_PREFIX = "/securetranscribe-transcripts"
RENAME_DAG = "securetranscribe_rename"
PROCESSING_DAGS = ("securetranscribe_process", "securetranscribe_process_batch")
ICON = """<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="#4a90d9"
stroke-width="2" stroke-linecap="round"><path d="M4 6h16M4 10h10M4 14h16M4 18h8"/></svg>"""


def trigger_rename(run_id: str, user: str | None, note: str) -> str:
    """Queue a ``securetranscribe_rename`` run for ``run_id``; returns its run id."""
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunTriggeredByType

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    dag_run_id = f"rename__{re.sub(r'[^A-Za-z0-9_.-]', '_', run_id)[:160]}__{stamp}"
    with create_session() as session:
        run = trigger_dag(RENAME_DAG, triggered_by=DagRunTriggeredByType.REST_API, run_id=dag_run_id,
                          conf={"run_id": run_id}, triggering_user_name=user, note=note[:1000], session=session)
        return run.run_id if run else dag_run_id


def run_state(dag_run_id: str) -> str | None:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        state = session.scalar(select(DagRun.state).where(DagRun.dag_id == RENAME_DAG,
                                                          DagRun.run_id == dag_run_id))
        return str(getattr(state, "value", state)) if state is not None else None


def run_dags(run_ids: list[str]) -> dict[str, str]:
    """The processing DAG of each run id (for links to its grid)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(select(DagRun.run_id, DagRun.dag_id).where(
            DagRun.run_id.in_(run_ids), DagRun.dag_id.in_(PROCESSING_DAGS))).all()
        return {run_id: dag_id for run_id, dag_id in rows}


def may_trigger(request: Request) -> bool:
    """Whether the logged-in user may start runs of the rename DAG (the auth manager decides)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    user = getattr(request.state, "airflow_user_object", None)
    return user is not None and get_auth_manager().is_authorized_dag(
        method="POST", access_entity=DagAccessEntity.RUN, details=DagDetails(id=RENAME_DAG), user=user)


def build_app() -> FastAPI:
    from tasks.transcripts.web import AirflowLink, create_app

    airflow = AirflowLink(trigger_rename=trigger_rename, run_state=run_state, run_dags=run_dags,
                          may_trigger=may_trigger)
    app = create_app(dependencies=[Depends(require_airflow_user)], airflow=airflow)

    serve_icon(app, ICON)

    return app


class TranscriptsPlugin(AirflowPlugin):
    name = "securetranscribe_transcripts"  # sorts before "transcription_metrics": first in the navigation
    fastapi_apps: ClassVar[list[dict[str, Any]]] = [
        {"app": build_app(), "url_prefix": URL_PREFIX, "name": "Transcripts"}]
    external_views: ClassVar[list[dict[str, Any]]] = [nav_view("Transcripts", URL_PREFIX, "transcripts")]
