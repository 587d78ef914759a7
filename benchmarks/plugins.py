"""A renderer plug-in for benchmarks (renderer "benchmarks.plugins:noop").

It draws a tiny page at once, so a job costs only what the service adds around
the render: the claim, the actor call, a small PNG and PDF, the result write.
A job titled "sleep:S" works for S seconds first (the incident's fake work).

With SCRIBBLE_BENCH_EXEC_DIR set (in the Ray workers' environment), every render
appends `job-id started finished` (epoch s) to
<dir>/<namespace>.log: an execution count that does not
rely on the service's own ledger.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from scribble_ray.jobs import Job
from scribble_ray.settings import Settings

PAGE = np.full((32, 32), 255, np.uint8)
PAGE[8:24, 8] = PAGE[8:24, 24] = 0
EXEC_DIR_ENV = "SCRIBBLE_BENCH_EXEC_DIR"


class NoopRenderer:
    name = "noop"
    supports_text = True

    def __init__(self, log_path: Path | None = None) -> None:
        self.log_path = log_path

    def render(self, job: Job, source: bytes | None) -> np.ndarray:
        started = time.time()
        title = job.options.title or ""
        if title.startswith("sleep:"):
            time.sleep(float(title.removeprefix("sleep:")))
        if self.log_path is not None:
            # One short O_APPEND write per render: atomic across processes.
            line = f"{job.id} {started!r} {time.time()!r}\n"
            fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        return PAGE.copy()


def exec_log_path(namespace: str) -> Path | None:
    folder = os.environ.get(EXEC_DIR_ENV)
    return Path(folder) / f"{namespace}.log" if folder else None


def noop(settings: Settings) -> NoopRenderer:
    return NoopRenderer(exec_log_path(settings.namespace))
