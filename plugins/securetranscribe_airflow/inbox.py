"""Inbox watching for Airflow: a trigger (runs in the triggerer) and a deferrable sensor.

The trigger polls the inbox folder and fires once at least one file has kept the same size, mtime and ctime
for ``stable_s`` seconds (``tasks.inbox.StabilityTracker``) — files still being written are not taken. It
never touches the files (the standard provider's file triggers delete what they see, which an inbox must
never do).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.sdk import BaseSensorOperator
from airflow.triggers.base import BaseTrigger, TriggerEvent


class InboxTrigger(BaseTrigger):
    """Fires with the list of complete candidate files in ``inbox``."""

    def __init__(self, inbox: str, stable_s: float = 5.0, poll_s: float = 2.0) -> None:
        super().__init__()
        self.inbox = inbox
        self.stable_s = stable_s
        self.poll_s = poll_s

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"inbox": self.inbox, "stable_s": self.stable_s, "poll_s": self.poll_s})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from tasks.inbox import StabilityTracker, list_candidates

        tracker = StabilityTracker(self.stable_s)
        while True:
            listing = await asyncio.to_thread(list_candidates, self.inbox)
            ready = tracker.update(listing)
            if ready:
                self.log.info("inbox: %d complete file(s)", len(ready))
                yield TriggerEvent({"files": [c.to_dict() for c in ready]})
                return
            await asyncio.sleep(self.poll_s)


class InboxSensor(BaseSensorOperator):
    """Waits, deferred (no worker slot held), until complete files are in the inbox; returns them."""

    template_fields = ("inbox",)

    def __init__(self, *, inbox: str, stable_s: float = 5.0, poll_s: float = 2.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.inbox = inbox
        self.stable_s = stable_s
        self.poll_s = poll_s

    def execute(self, context: Any) -> Any:
        self.defer(trigger=InboxTrigger(self.inbox, self.stable_s, self.poll_s), method_name="execute_complete")

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return list((event or {}).get("files", []))
