"""Airflow 3 plugin: processing runs people can follow — named after their file, with a one-line note.

- **Run notes** (a listener, in the scheduler): a processing run gets the note ``<file> — processing`` when
  it starts, and when it ends the line its finalize task pushed (XCom ``note``: the file and the outcome,
  or the reason it was quarantined; ``tasks/outcome.py:run_note``), else the tasks that failed. Airflow 3
  gives task code no database access and its Task SDK no call to set a run's note, so the note travels as
  an XCom and the scheduler, which finishes the run, writes it in the same transaction. A note someone
  wrote by hand is kept under ours.
- **Run ids for runs started by hand** (an api-server middleware): a processing run triggered without a
  run id (the UI's trigger form leaves it empty; REST) gets ``file__<name>__manual_<time>_<random>``
  (``tasks/inbox.py:manual_run_id``) instead of ``manual__<time>``, like inbox runs. Airflow has no hook
  for this: a timetable's ``generate_run_id`` does not see the run's conf.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any, ClassVar

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin

log = logging.getLogger(__name__)

PROCESSING_DAGS = ("securetranscribe_process", "securetranscribe_process_batch")
TRIGGER_PATH = re.compile(r"/api/v2/dags/(" + "|".join(PROCESSING_DAGS) + r")/dagRuns/?$")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


def _ours(note: str | None, path: str | None) -> bool:
    """A note this plugin wrote (it starts with the run's file name and a dash)."""
    return bool(note) and bool(path) and str(note).startswith(f"{Path(str(path)).name} — ")


def _pushed_note(dag_run: Any, session: Any) -> str | None:
    from airflow.models.xcom import XComModel

    query = XComModel.get_many(run_id=dag_run.run_id, dag_ids=dag_run.dag_id, task_ids="finalize", key="note")
    row = session.scalars(query.limit(1)).first()
    value = XComModel.deserialize_value(row) if row is not None else None
    return value if isinstance(value, str) and value else None


def _failed_tasks(dag_run: Any, session: Any) -> list[str]:
    from airflow.utils.state import TaskInstanceState

    tis = dag_run.get_task_instances(state=[TaskInstanceState.FAILED], session=session)
    return sorted({ti.task_id for ti in tis})


class RunNotes:
    """Listener: the note of each processing run (see the module's docstring)."""

    @hookimpl
    def on_dag_run_running(self, dag_run: Any, msg: str) -> None:
        from tasks.outcome import running_note

        if dag_run.dag_id in PROCESSING_DAGS and not dag_run.note:
            dag_run.note = running_note((dag_run.conf or {}).get("path"))

    @hookimpl
    def on_dag_run_success(self, dag_run: Any, msg: str) -> None:
        self._finished(dag_run)

    @hookimpl
    def on_dag_run_failed(self, dag_run: Any, msg: str) -> None:
        self._finished(dag_run)

    def _finished(self, dag_run: Any) -> None:
        from sqlalchemy.orm import object_session

        from tasks.outcome import one_line

        if dag_run.dag_id not in PROCESSING_DAGS:
            return
        session = object_session(dag_run)
        if session is None:  # not attached (never so in the scheduler): leave the note as it is
            return
        path = (dag_run.conf or {}).get("path")
        note = _pushed_note(dag_run, session)
        if note is None:
            failed = _failed_tasks(dag_run, session)
            name = Path(str(path)).name if path else "no file given"
            note = one_line(f"{name} — failed at {', '.join(failed)}: see the task logs" if failed
                            else f"{name} — {dag_run.state}")
        previous = dag_run.note
        dag_run.note = note if not previous or _ours(previous, path) else f"{note}\n\n{previous}"


def _renamed(body: bytes, now: float | None = None) -> bytes:
    """The trigger request's body with a run id named after its file, when it has none and names a file."""
    from tasks.inbox import manual_run_id

    try:
        data = json.loads(body or b"{}")
    except ValueError:
        return body
    if not isinstance(data, dict) or data.get("dag_run_id"):
        return body
    path = (data.get("conf") or {}).get("path") if isinstance(data.get("conf"), dict) else None
    if not isinstance(path, str) or not path.strip():
        return body
    return json.dumps({**data, "dag_run_id": manual_run_id(path, now)}).encode()


class NameManualRuns:
    """ASGI middleware: processing runs triggered without a run id are named after their file."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not TRIGGER_PATH.search(scope["path"]):
            await self.app(scope, receive, send)
            return
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, receive, send)
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = _renamed(b"".join(chunks))
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await self.app({**scope, "headers": headers}, replay, send)


class SecureTranscribeRunsPlugin(AirflowPlugin):
    name = "securetranscribe_runs"
    listeners: ClassVar[list[Any]] = [RunNotes()]
    fastapi_root_middlewares: ClassVar[list[dict[str, Any]]] = [
        {"middleware": NameManualRuns, "args": [], "kwargs": {}, "name": "processing runs named after their file"}]
