"""A renderer plug-in for benchmarks (renderer "benchmarks.plugins:noop").

It draws a tiny page at once, so a job costs only what the service adds around
the render: the claim, the actor call, a small PNG and PDF, the result write.
A job titled "sleep:S" works for S seconds first (the incident's fake work).

With SCRIBBLE_BENCH_EXEC_DIR set (in the Ray workers' environment), every render
logs its start (with the worker's pid) and its end to <dir>/<namespace>.log
(benchmarks.common.log_start / log_execution): an execution count that does not
rely on the service's own ledger.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import log_execution, log_start
from scribble_ray.jobs import Job
from scribble_ray.settings import Settings
from scribble_ray.stages import StageClock

PAGE = np.full((32, 32), 255, np.uint8)
PAGE[8:24, 8] = PAGE[8:24, 24] = 0
EXEC_DIR_ENV = "SCRIBBLE_BENCH_EXEC_DIR"


class NoopRenderer:
    name = "noop"
    supports_text = True

    def __init__(self, log_path: Path | None = None) -> None:
        self.log_path = log_path

    def render(self, job: Job, source: bytes | None) -> np.ndarray:
        log = self.log_path
        started = log_start(log, job.id) if log is not None else time.time()
        title = job.options.title or ""
        if title.startswith("sleep:"):
            time.sleep(float(title.removeprefix("sleep:")))
        if log is not None:
            log_execution(log, job.id, started, time.time())
        return PAGE.copy()


def exec_log_path(namespace: str) -> Path | None:
    folder = os.environ.get(EXEC_DIR_ENV)
    return Path(folder) / f"{namespace}.log" if folder else None


def noop(settings: Settings) -> NoopRenderer:
    return NoopRenderer(exec_log_path(settings.namespace))


def noop_stages(job: Job, renderer: Any, blobs: Any, clock: StageClock) -> dict[str, str]:
    """A no-op pipeline (setting stages="benchmarks.plugins:noop_stages"): only the
    render plug-in runs (to log the execution, or to sleep), no PNG, PDF or artifact
    writes, so a job costs exactly what dispatch and the result write cost."""
    with clock.stage("render"):
        renderer.render(job, None)
    return {}
