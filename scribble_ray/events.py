"""Job status changes as the coordinator sees them, for long-polls and SSE streams.

The coordinator records every transition it makes or learns of; waiters are woken
by those records, never by polling the store. The history is in memory and
bounded: a restarted coordinator starts empty, and readers fall back to the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from typing import Any

from scribble_ray.jobs import Status


class JobEvents:
    def __init__(self, max_jobs: int = 20_000) -> None:
        self.max_jobs = max_jobs
        self._history: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        self._waiters: dict[str, set[asyncio.Event]] = {}

    def record(self, job_id: str, status: Status, attempt: int) -> None:
        """Append a status change (a repeat of the last status is dropped) and wake waiters."""
        history = self._history.setdefault(job_id, [])
        self._history.move_to_end(job_id)
        if not history or history[-1]["status"] != status.value:
            history.append({"status": status.value, "attempt": attempt, "at": time.time()})
        while len(self._history) > self.max_jobs:
            self._history.popitem(last=False)
        self.poke(job_id)

    def poke(self, job_id: str) -> None:
        """Wake whoever waits on this job (it changed, or may have)."""
        for event in self._waiters.pop(job_id, set()):
            event.set()

    def since(self, job_id: str, index: int) -> list[dict[str, Any]]:
        return list(self._history.get(job_id, [])[index:])

    def waiter(self, job_id: str) -> asyncio.Event:
        """An event set at the job's next change; register it before reading state."""
        event = asyncio.Event()
        self._waiters.setdefault(job_id, set()).add(event)
        return event

    def forget(self, job_id: str, event: asyncio.Event) -> None:
        self._waiters.get(job_id, set()).discard(event)

    async def wait_since(self, job_id: str, index: int, timeout: float) -> list[dict[str, Any]]:
        """Changes after `index`; waits up to `timeout` seconds for the first one."""
        event = self.waiter(job_id)
        try:
            if not self.since(job_id, index):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), timeout)
            return self.since(job_id, index)
        finally:
            self.forget(job_id, event)
