"""What the benchmark scripts share: percentiles, the machine, PostgreSQL schemas, output.

Benchmarks are scripts, never tests: each prints a table and writes JSON under
benchmarks/results/. The machine is shared, so every result records the number
of CPUs and the load average before and after the run.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a checkout: scribble_ray and benchmarks

PG_URL = os.environ.get("SCRIBBLE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max in milliseconds."""
    return {
        "n": float(len(seconds)),
        "p50_ms": 1000 * percentile(seconds, 50),
        "p95_ms": 1000 * percentile(seconds, 95),
        "p99_ms": 1000 * percentile(seconds, 99),
        "max_ms": 1000 * max(seconds) if seconds else float("nan"),
    }


def median(values: Sequence[float]) -> float:
    clean = [v for v in values if v == v]  # drop NaN
    return statistics.median(clean) if clean else float("nan")


def machine() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "loadavg": list(os.getloadavg()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


@contextmanager
def pg_schema(prefix: str = "bench", *, keep: bool = False) -> Iterator[str]:
    """A fresh PostgreSQL schema; yields a URL whose connections use it (search_path)."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_URL, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}application_name={name}&options=-csearch_path%3D{name}"
    finally:
        if not keep:
            with psycopg.connect(PG_URL, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {name} CASCADE")


def write_result(name: str, report: dict[str, Any], out: Path | None = None) -> Path:
    path = out or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return path


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table (prints fine in a terminal too)."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            if v != v:
                return "-"
            return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.2f}"
        return str(v)

    body = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    out = [line, sep]
    for r in body:
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def ray_init(num_cpus: int = 16) -> None:
    """A new local Ray cluster that can import scribble_ray and benchmarks."""
    import ray

    for attempt in range(3):  # on an overloaded machine the raylet can time out starting
        try:
            ray.init(
                address="local",
                num_cpus=num_cpus,
                include_dashboard=False,
                log_to_driver=False,
                runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
            )
            return
        except Exception:
            ray.shutdown()
            if attempt == 2:
                raise
            time.sleep(5)


# -- the execution log: what the work itself did, independent of the system under test ----
def _append(log: str | Path, line: str) -> None:
    """One short O_APPEND write: atomic across processes, so no line is torn or lost."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def log_start(log: str | Path, job_id: str) -> float:
    """Log that this process starts executing job_id; returns the start time (epoch s).

    The pid lets a benchmark kill the process that is in the middle of a job.
    """
    started = time.time()
    _append(log, f"start {job_id} {os.getpid()} {started!r}\n")
    return started


def log_execution(log: str | Path, job_id: str, started: float, finished: float) -> None:
    """Log one execution that ran to its end."""
    _append(log, f"end {job_id} {started!r} {finished!r}\n")


@dataclass
class ExecLog:
    """The parsed execution log: every start (job, pid, t) and every end (job, t0, t1)."""

    starts: list[tuple[str, int, float]] = field(default_factory=list)
    ends: list[tuple[str, float, float]] = field(default_factory=list)

    @classmethod
    def read(cls, log: str | Path) -> ExecLog:
        parsed = cls()
        path = Path(log)
        if not path.exists():
            return parsed
        # While writers append, a reader can see a line only in part: skip it (it is
        # whole by the time the run's final read happens).
        for fields in (ln.split() for ln in path.read_text().split("\n")[:-1]):
            if len(fields) != 4:
                continue
            kind, job_id, a, b = fields
            if kind == "start":
                parsed.starts.append((job_id, int(a), float(b)))
            else:
                parsed.ends.append((job_id, float(a), float(b)))
        return parsed

    def completed(self) -> Counter[str]:
        """Executions run to the end, per job."""
        return Counter(job_id for job_id, _, _ in self.ends)

    def started(self) -> Counter[str]:
        return Counter(job_id for job_id, _, _ in self.starts)

    def first_start(self) -> dict[str, datetime]:
        first: dict[str, float] = {}
        for job_id, _, t in self.starts:
            first[job_id] = min(first.get(job_id, t), t)
        return {j: datetime.fromtimestamp(t, UTC) for j, t in first.items()}

    def end_times(self) -> list[datetime]:
        return [datetime.fromtimestamp(t1, UTC) for _, _, t1 in self.ends]

    def in_flight(self) -> list[tuple[str, int, float]]:
        """Starts with no end (yet): (job, pid, started)."""
        ended = {(job_id, t0) for job_id, t0, _ in self.ends}
        return [(j, pid, t) for j, pid, t in self.starts if (j, t) not in ended]


def wait_for(
    count: Callable[[], int], target: int, timeout: float, stall: float | None = None
) -> bool:
    """Poll count() until it reaches target (True), or timeout passes, or (with stall)
    it has not moved for stall seconds: a bounded wait for jobs that may never finish."""
    deadline = time.monotonic() + timeout
    last, moved = -1, time.monotonic()
    while time.monotonic() < deadline:
        n = count()
        if n >= target:
            return True
        if n != last:
            last, moved = n, time.monotonic()
        elif stall is not None and time.monotonic() - moved > stall:
            return False
        time.sleep(0.2)
    return False
