"""A peer for incident.py: Ray Serve's asynchronous inference (@task_consumer, Celery on Redis).

What a Ray user reaches for first: a Serve deployment decorated with
`ray.serve.task_consumer`, whose `@task_handler` runs each task, fed by the
`CeleryTaskProcessorAdapter` over Redis (broker and result backend in one dedicated
Redis database, flushed before and after each run).

N workers = N replicas, each with max_ongoing_requests=1, which the adapter turns
into a Celery worker (threads pool) of concurrency 1 inside the replica's process:
one task at a time per replica, like one Procrastinate worker of concurrency 1.

Reliability settings: the adapter's own (task_acks_late, task_reject_on_worker_lost;
it refuses overrides of those), plus worker_prefetch_multiplier=1 (Celery's advice
for late acks: a worker reserves no more than it runs). The Redis transport
redelivers an unacknowledged task only after its visibility_timeout (Kombu's default
3600 s); `visibility_timeout` below overrides it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from benchmarks.common import log_execution, log_start

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_DB = int(os.environ.get("SCRIBBLE_BENCH_REDIS_DB", "13"))  # the benchmark's own db
APP_NAME = "bench-serve-celery"
QUEUE = "bench_serve_celery"
TASK = "bench_job"


def processor_config(visibility_timeout: float | None) -> Any:
    from ray.serve.schema import CeleryAdapterConfig, TaskProcessorConfig

    url = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"
    transport: dict[str, Any] | None = None
    if visibility_timeout is not None:
        # Sweep for expired unacked tasks every second, so the timeout alone decides.
        transport = {
            "visibility_timeout": visibility_timeout,
            "unacked_restore_interval": 1,
            "unacked_restore_throttle": 1,
        }
    return TaskProcessorConfig(
        queue_name=QUEUE,
        adapter="ray.serve.task_processor.CeleryTaskProcessorAdapter",
        adapter_config=CeleryAdapterConfig(
            broker_url=url,
            backend_url=url,
            app_custom_config={"worker_prefetch_multiplier": 1},
            broker_transport_options=transport,
        ),
    )


def consumer_app(config: Any, workers: int, log: str, num_cpus: float) -> Any:
    """The Serve application: N task-consumer replicas logging each execution."""
    from ray import serve
    from ray.serve.task_consumer import task_consumer, task_handler

    @serve.deployment(
        name="BenchConsumer",
        num_replicas=workers,
        max_ongoing_requests=1,  # the adapter's Celery concurrency per replica
        ray_actor_options={"num_cpus": num_cpus},
    )
    @task_consumer(task_processor_config=config)
    class BenchConsumer:
        def __init__(self, log: str) -> None:
            self.log = log

        @task_handler(name=TASK)
        def bench_job(self, job_id: str, enqueued: float, work: float) -> None:
            started = log_start(self.log, job_id)
            time.sleep(work)
            log_execution(self.log, job_id, started, time.time())

    return BenchConsumer.bind(log)


def _flush() -> None:
    import redis

    redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB).flushdb()


@contextmanager
def running(
    workers: int, log: str, *, num_cpus: float, visibility_timeout: float | None
) -> Iterator[Any]:
    """Deploy N consumers on the current Ray cluster; yields the producer's adapter once
    every replica's Celery worker answers a ping."""
    from ray import serve
    from ray.serve.task_consumer import instantiate_adapter_from_config

    _flush()
    config = processor_config(visibility_timeout)
    serve.start(proxy_location="Disabled")  # no HTTP: tasks arrive through Redis
    serve.run(consumer_app(config, workers, log, num_cpus), name=APP_NAME, route_prefix=None)
    adapter = instantiate_adapter_from_config(config)
    deadline = time.monotonic() + 120
    while len(adapter.health_check_sync() or []) < workers:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{workers} Celery workers did not answer within 120 s")
        time.sleep(0.5)
    try:
        yield adapter
    finally:
        serve.delete(APP_NAME)
        _flush()


def enqueue_burst(adapter: Any, jobs: int, work: float) -> dict[str, datetime]:
    """Enqueue the burst, one task per job; the enqueue time travels in the task's args."""
    created: dict[str, datetime] = {}
    for i in range(jobs):
        job_id = f"celery-{i:06d}-{os.urandom(4).hex()}"
        now = time.time()
        created[job_id] = datetime.fromtimestamp(now, UTC)
        adapter.enqueue_task_sync(TASK, args=[job_id, now, work])
    return created
