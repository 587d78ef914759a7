"""Metrics through ray.util.metrics: exported by every Ray node to Prometheus and
shown in the Ray dashboard. Created lazily, inside the actor that records them."""

from __future__ import annotations

from functools import cache

from ray.util import metrics

LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]
STAGE_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]


class Metrics:
    def __init__(self) -> None:
        self.jobs_submitted = metrics.Counter(
            "scribble_jobs_submitted_total", "Jobs accepted", tag_keys=("kind", "lane")
        )
        self.jobs_finished = metrics.Counter(
            "scribble_jobs_finished_total", "Jobs ended, by outcome", tag_keys=("outcome",)
        )
        self.attempts_ended = metrics.Counter(
            "scribble_attempts_total", "Attempts ended, by outcome", tag_keys=("outcome",)
        )
        self.queue_depth = metrics.Gauge(
            "scribble_queue_depth", "Queued jobs per lane", tag_keys=("lane",)
        )
        self.pool_size = metrics.Gauge("scribble_pool_size", "Pipeline workers")
        self.pickup_latency = metrics.Histogram(
            "scribble_pickup_latency_seconds",
            "From runnable (submitted or retry due) to claimed",
            boundaries=LATENCY_BUCKETS,
            tag_keys=("lane",),
        )
        self.stage_duration = metrics.Histogram(
            "scribble_stage_duration_seconds",
            "Duration of each pipeline stage",
            boundaries=STAGE_BUCKETS,
            tag_keys=("stage",),
        )
        self.attempts_per_job = metrics.Histogram(
            "scribble_attempts_per_job",
            "Attempts a job took to end",
            boundaries=[1, 2, 3, 4, 5, 10],
        )
        self.stale_writes = metrics.Counter(
            "scribble_stale_writes_rejected_total", "Fenced-off writes of stale attempts"
        )
        self.overlapping_attempts = metrics.Gauge(
            "scribble_overlapping_attempts",
            "Attempts of one job that ran at the same time (an alarm: must stay 0)",
        )
        self.worker_deaths = metrics.Counter(
            "scribble_worker_deaths_total", "Pipeline workers lost mid-job"
        )


@cache
def get_metrics() -> Metrics:
    return Metrics()
