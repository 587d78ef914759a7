"""The PipelineWorker actor: runs one claimed attempt at a time and records its end.

The worker renews its attempt's lease while it works and writes the attempt's
result itself, fenced by (job id, attempt): a result survives a coordinator
restart, and a stale attempt (cancelled, rescued) can never overwrite a newer one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from typing import Any

import cv2
import ray
from ray.exceptions import RayActorError

from scribble_ray.blobs import open_blobs
from scribble_ray.jobs import Job, JobError, Status, TransientJobError, backoff_seconds
from scribble_ray.metrics import get_metrics
from scribble_ray.renderers import make_renderer
from scribble_ray.settings import Settings
from scribble_ray.stages import STAGES, Aborted, StageClock, stages_function
from scribble_ray.store import JobStore, open_store
from scribble_ray.store.base import Success
from scribble_ray.tracing import traced_attempts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AttemptResult:
    job_id: str
    attempt: int
    status: Status | None  # None: the write was fenced off (attempt no longer current)
    error: str | None = None


class CoordinatorGate:
    """The coordinator's cluster-wide limits on paid calls, as the renderer's CallGate.

    Used from the stage thread, never the actor's event loop, so blocking is fine
    (it waits on `ref.future()`: ray.get would warn about blocking an async actor,
    which only its loop thread could). The coordinator is looked up on first use
    (it created this worker, so it exists; a restarted one keeps its name)."""

    def __init__(self, namespace: str) -> None:
        self._namespace = namespace
        self._coordinator: Any = None

    def acquire(self, holder: str) -> None:
        try:
            self._actor().gemini_acquire.remote(holder).future().result()
        except (RayActorError, ValueError) as exc:  # ValueError: no such actor (yet)
            raise TransientJobError(
                f"the coordinator did not grant a Gemini permit: {exc}",
                code="coordinator_unavailable",
            ) from None

    def release(self, holder: str, *, throttled_for: float | None = None) -> None:
        try:
            ref = self._actor().gemini_release.remote(holder, throttled_for=throttled_for)
            ref.future().result()
        except (RayActorError, ValueError):  # the permit expires on its own
            log.warning("could not return the Gemini permit of %s", holder, exc_info=True)

    def _actor(self) -> Any:
        if self._coordinator is None:
            from scribble_ray.coordinator import COORDINATOR_NAME  # (it imports this module)

            self._coordinator = ray.get_actor(COORDINATOR_NAME, namespace=self._namespace)
        return self._coordinator


class ResultWriter:
    """Writes successes as they come, and all that arrived during one write in the next
    (a group commit): a job of seconds is written alone at once; jobs of a few ms,
    handed out several per call, share commits instead of queueing for one each."""

    def __init__(self, store: JobStore) -> None:
        self._store = store
        self._pending: list[tuple[Success, asyncio.Future[AttemptResult]]] = []
        self._writer: asyncio.Task[None] | None = None

    def write(self, success: Success) -> asyncio.Future[AttemptResult]:
        done: asyncio.Future[AttemptResult] = asyncio.get_running_loop().create_future()
        self._pending.append((success, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        return done

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                written = await asyncio.to_thread(self._store.succeed_many, [s for s, _ in batch])
            except Exception as exc:  # the store is down: each attempt's caller sees it
                for _, done in batch:
                    done.set_exception(exc)
                continue
            for (s, done), ok in zip(batch, written, strict=True):
                done.set_result(
                    AttemptResult(s.job_id, s.attempt, Status.SUCCEEDED if ok else None)
                )


class PipelineWorker:
    def __init__(self, settings: Settings, name: str) -> None:
        self.settings = settings
        self.name = name
        self.store = open_store(settings.store_url, migrate=False)
        self.blobs = open_blobs(settings.blob_url, s3_endpoint_url=settings.s3_endpoint_url)
        self.renderer = make_renderer(settings, gate=CoordinatorGate(settings.namespace))
        self.run_stages = traced_attempts(stages_function(settings.stages), settings, name)
        self.current: tuple[str, int] | None = None
        self.results = ResultWriter(self.store)
        cv2.setNumThreads(1)  # one job per worker; parallelism comes from the pool

    def __repr__(self) -> str:  # the name shown in the Ray dashboard and log prefixes
        return self.name

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "node": ray.get_runtime_context().get_node_id(),
            "current": self.current,
        }

    async def run(self, job: Job) -> AttemptResult:
        return (await self.run_many([job]))[0]

    async def run_many(self, jobs: list[Job]) -> list[AttemptResult]:
        """Run attempts claimed together, one after another; each result is written as
        soon as its attempt ends, and every lease not yet ended is renewed meanwhile."""
        held = {job.id: (job, threading.Event()) for job in jobs}
        for _, lease_ok in held.values():
            lease_ok.set()
        renewer = asyncio.create_task(self._renew_leases(held))
        try:
            ended = [await self._run_one(job, held) for job in jobs]
            return [r if isinstance(r, AttemptResult) else await r for r in ended]
        finally:
            renewer.cancel()

    async def _run_one(
        self, job: Job, held: dict[str, tuple[Job, threading.Event]]
    ) -> AttemptResult | asyncio.Future[AttemptResult]:
        """Run one attempt; a success is handed to the result writer and not waited
        for, so the next job starts while it commits."""
        self.current = (job.id, job.attempt)
        clock = StageClock(check=held[job.id][1].is_set)
        try:
            try:
                artifacts = await asyncio.to_thread(
                    self.run_stages, job, self.renderer, self.blobs, clock
                )
            finally:  # the attempt's own write ends it: stop renewing first
                del held[job.id]
            return self.results.write(Success(job.id, job.attempt, artifacts, clock.timings))
        except Aborted as exc:
            return AttemptResult(job.id, job.attempt, None, str(exc))
        except Exception as exc:
            return await self._end_failed(job, exc, clock.timings)
        finally:
            self.current = None
            for stage, seconds in clock.timings.items():
                if stage in STAGES:
                    get_metrics().stage_duration.observe(seconds, tags={"stage": stage})

    async def _end_failed(
        self, job: Job, exc: Exception, timings: dict[str, float]
    ) -> AttemptResult:
        permanent = isinstance(exc, JobError) and exc.permanent
        code = exc.code if isinstance(exc, JobError) else "internal_error"
        message = str(exc) or type(exc).__name__
        if not isinstance(exc, JobError):
            log.exception("job %s attempt %d crashed", job.id, job.attempt)
        delay = backoff_seconds(
            job.attempt, self.settings.retry_base_seconds, self.settings.retry_max_seconds
        )
        status = await asyncio.to_thread(
            self.store.end_attempt,
            job.id,
            job.attempt,
            code=code,
            message=message,
            retry=not permanent,
            delay=delay,
            timings=timings,
        )
        return AttemptResult(job.id, job.attempt, status, message)

    async def _renew_leases(self, held: dict[str, tuple[Job, threading.Event]]) -> None:
        """Renew at a third of the lease; a refused renewal means stop (fencing)."""
        interval = self.settings.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            for job, lease_ok in list(held.values()):
                try:
                    ok = await asyncio.to_thread(
                        self.store.renew, job.id, job.attempt, self.settings.lease_seconds
                    )
                except Exception:  # the store is unreachable: keep trying while the lease lasts
                    log.warning("lease renewal of job %s failed", job.id, exc_info=True)
                    continue
                if not ok:
                    lease_ok.clear()
