"""What GET /stats says about recent jobs: latencies, stages, attempts, Gemini use.

Pure: it reads finished jobs as the store returns them. The same quantities are
exported as histograms through ray.util.metrics (metrics.py); this is the quick
look that needs no Prometheus.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from scribble_ray.jobs import Job
from scribble_ray.stages import STAGES


def percentiles_ms(seconds: Sequence[float]) -> dict[str, float | None]:
    """p50/p95/p99 (nearest rank) in milliseconds; None when there is nothing to rank."""
    ranked = sorted(seconds)

    def rank(p: float) -> float | None:
        if not ranked:
            return None
        return round(1000 * ranked[max(0, math.ceil(p / 100 * len(ranked)) - 1)], 1)

    return {"p50_ms": rank(50), "p95_ms": rank(95), "p99_ms": rank(99)}


def summarise(jobs: Iterable[Job]) -> dict[str, Any]:
    """Over the finished jobs among `jobs` (the most recent ones, as listed)."""
    finished = [j for j in jobs if j.status.final and j.finished_at is not None]
    # Queue wait of jobs that started once: a retry's start is after its backoff.
    pickups = [
        (j.started_at - j.created_at).total_seconds()
        for j in finished
        if j.attempt == 1 and j.started_at is not None
    ]
    runs = [
        (j.finished_at - j.started_at).total_seconds()  # type: ignore[operator]
        for j in finished
        if j.started_at is not None
    ]
    stages = {
        stage: percentiles_ms([j.timings[stage] for j in finished if stage in j.timings])
        for stage in STAGES
    }
    return {
        "jobs": len(finished),
        "outcomes": dict(Counter(j.status.value for j in finished)),
        "pickup": percentiles_ms(pickups),
        "run": percentiles_ms(runs),
        "stages": {name: p for name, p in stages.items() if p["p50_ms"] is not None},
        "attempts": {str(n): c for n, c in sorted(Counter(j.attempt for j in finished).items())},
        "gemini_calls": int(sum(j.timings.get("gemini_calls", 0) for j in finished)),
        "gemini_cache_hits": int(sum(j.timings.get("gemini_cache_hit", 0) for j in finished)),
    }
