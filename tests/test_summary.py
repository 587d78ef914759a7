"""GET /stats's summary of recent jobs (scribble_ray/summary.py): pure, no service."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from scribble_ray.jobs import Job, JobOptions, Kind, Lane, Status
from scribble_ray.summary import percentiles_ms, summarise

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def job(
    status: Status,
    *,
    attempt: int = 1,
    pickup_ms: float = 0.0,
    run_ms: float = 0.0,
    timings: dict[str, float] | None = None,
) -> Job:
    started = T0 + timedelta(milliseconds=pickup_ms)
    final = status in {Status.SUCCEEDED, Status.FAILED, Status.CANCELLED}
    return Job(
        id=f"j{pickup_ms}-{run_ms}-{status}",
        kind=Kind.IMAGE,
        status=status,
        attempt=attempt,
        max_attempts=3,
        options=JobOptions(),
        owner="local",
        lane=Lane.INTERACTIVE,
        created_at=T0,
        started_at=started if attempt else None,
        finished_at=started + timedelta(milliseconds=run_ms) if final else None,
        timings=timings or {},
    )


def test_percentiles_are_nearest_rank_in_ms() -> None:
    assert percentiles_ms([i / 1000 for i in range(1, 101)]) == {
        "p50_ms": 50.0,
        "p95_ms": 95.0,
        "p99_ms": 99.0,
    }
    assert percentiles_ms([0.25]) == {"p50_ms": 250.0, "p95_ms": 250.0, "p99_ms": 250.0}
    assert percentiles_ms([]) == {"p50_ms": None, "p95_ms": None, "p99_ms": None}


def test_summary_counts_finished_jobs_only_and_pickup_of_first_attempts() -> None:
    jobs = [
        job(Status.SUCCEEDED, pickup_ms=4, run_ms=400, timings={"render": 0.3, "pdf": 0.02}),
        job(Status.SUCCEEDED, pickup_ms=6, run_ms=600, timings={"render": 0.5, "pdf": 0.04}),
        # A retried job's start is after its backoff: not a pickup.
        job(Status.SUCCEEDED, attempt=2, pickup_ms=3000, run_ms=500, timings={"render": 0.4}),
        job(
            Status.FAILED,
            pickup_ms=8,
            run_ms=100,
            timings={"render": 0.1, "gemini_calls": 2, "gemini_cache_hit": 0},
        ),
        job(Status.SUCCEEDED, pickup_ms=2, run_ms=50, timings={"gemini_cache_hit": 1}),
        job(Status.RUNNING, pickup_ms=1),  # not finished: left out
        job(Status.QUEUED, attempt=0),
    ]
    s = summarise(jobs)
    assert s["jobs"] == 5
    assert s["outcomes"] == {"succeeded": 4, "failed": 1}
    assert s["pickup"] == {"p50_ms": 4.0, "p95_ms": 8.0, "p99_ms": 8.0}
    assert s["run"]["p50_ms"] == 400.0
    assert s["stages"]["render"]["p50_ms"] == 300.0
    assert s["stages"]["pdf"] == {"p50_ms": 20.0, "p95_ms": 40.0, "p99_ms": 40.0}
    assert "fetch" not in s["stages"]  # no job had it
    assert s["attempts"] == {"1": 4, "2": 1}
    assert (s["gemini_calls"], s["gemini_cache_hits"]) == (2, 1)
