"""Inbox watching for Airflow: a trigger (runs in the triggerer) and a deferrable sensor.

The trigger polls the inbox folder and fires once at least one file has kept the same size, mtime and ctime
for ``stable_s`` seconds (``tasks.inbox.StabilityTracker``) — files still being written are not taken — or
at once when inotify saw its writer close it, nothing written since (``tasks.inbox.WriteWatcher``). It
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

    def __init__(self, inbox: str, stable_s: float = 5.0, poll_s: float = 2.0, watch_closes: bool = True) -> None:
        super().__init__()
        self.inbox = inbox
        self.stable_s = stable_s
        self.poll_s = poll_s
        self.watch_closes = watch_closes

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"inbox": self.inbox, "stable_s": self.stable_s, "poll_s": self.poll_s,
                 "watch_closes": self.watch_closes})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from tasks.inbox import StabilityTracker, WriteWatcher, list_candidates

        tracker, watcher = StabilityTracker(self.stable_s), WriteWatcher(self.inbox, enabled=self.watch_closes)
        self.log.info("inbox: watching %s (writers' closes: %s; window %g s)", self.inbox,
                      "seen, inotify" if watcher.active else "not seen", self.stable_s)
        try:
            while True:
                before = watcher.closed()
                listing = await asyncio.to_thread(list_candidates, self.inbox)
                ready = tracker.update(listing, closed=watcher.closed_since(before))
                if ready:
                    self.log.info("inbox: %d complete file(s)", len(ready))
                    yield TriggerEvent({"files": [c.to_dict() for c in ready]})
                    return
                await asyncio.sleep(self.poll_s)
        finally:
            watcher.close()


class InboxSensor(BaseSensorOperator):
    """Waits, deferred (no worker slot held), until complete files are in the inbox; returns them."""

    template_fields = ("inbox",)

    def __init__(self, *, inbox: str, stable_s: float = 5.0, poll_s: float = 2.0, watch_closes: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.inbox = inbox
        self.stable_s = stable_s
        self.poll_s = poll_s
        self.watch_closes = watch_closes

    def execute(self, context: Any) -> Any:
        self.defer(trigger=InboxTrigger(self.inbox, self.stable_s, self.poll_s, self.watch_closes),
                   method_name="execute_complete")

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return list((event or {}).get("files", []))
