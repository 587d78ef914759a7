"""incident.py --kill: SIGKILL one worker process in the middle of a job, then count.

The victim is found through the execution log (benchmarks.common.log_start writes
the executing process's pid), so the same code kills a baseline or store process, a
Procrastinate worker, a scribble-ray pipeline actor or a Serve replica: whichever
process is running a job that started less than half a job's work ago.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import ExecLog


@dataclass
class Kill:
    job_id: str
    pid: int
    job_started: float  # epoch s, the killed execution's start
    at: float  # epoch s


class Killer:
    """A thread that waits until `after` executions have ended since it started (the
    burst is running), then kills the process of a job started within `fresh` s."""

    def __init__(self, log: str | Path, after: int, fresh: float) -> None:
        self.log, self.after, self.fresh = log, after, fresh
        self.kill: Kill | None = None
        self._stop = threading.Event()
        self._since = time.time()
        self._thread = threading.Thread(target=self._run, daemon=True, name="killer")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            execs = ExecLog.read(self.log)
            if sum(1 for _, _, t1 in execs.ends if t1 >= self._since) < self.after:
                continue
            now = time.time()
            fresh = [s for s in execs.in_flight() if now - s[2] < self.fresh]
            if fresh:
                job_id, pid, started = max(fresh, key=lambda s: s[2])
                os.kill(pid, signal.SIGKILL)
                self.kill = Kill(job_id, pid, started, time.time())
                return

    def stop(self) -> Kill | None:
        self._stop.set()
        self._thread.join(5)
        return self.kill


def outcome(kill: Kill | None, execs: ExecLog, job_ids: set[str]) -> dict[str, Any]:
    """What the kill did: duplicates (completed > once), re-runs (started > once), lost
    jobs, and the time from the kill to the killed job's first completion."""
    completed = execs.completed()
    started = execs.started()
    result: dict[str, Any] = {
        "killed": asdict(kill) if kill else None,
        "completed": sum(1 for j in job_ids if completed[j]),
        "completed_more_than_once": sum(1 for j in job_ids if completed[j] > 1),
        "started_more_than_once": sum(1 for j in job_ids if started[j] > 1),
        "lost": sorted(j for j in job_ids if not completed[j]),
        "killed_mid_job": None,
        "recovery_s": float("nan"),
    }
    if kill is None:
        return result
    # Mid-job: the killed execution never logged its end.
    result["killed_mid_job"] = not any(
        j == kill.job_id and t0 == kill.job_started for j, t0, _ in execs.ends
    )
    later = [t1 for j, _, t1 in execs.ends if j == kill.job_id and t1 > kill.at]
    if later:
        result["recovery_s"] = min(later) - kill.at
    return result
