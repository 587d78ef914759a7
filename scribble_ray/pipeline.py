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
from scribble_ray.stages import STAGES, Aborted, StageClock, run_stages
from scribble_ray.store import open_store

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


class PipelineWorker:
    def __init__(self, settings: Settings, name: str) -> None:
        self.settings = settings
        self.name = name
        self.store = open_store(settings.store_url, migrate=False)
        self.blobs = open_blobs(settings.blob_url, s3_endpoint_url=settings.s3_endpoint_url)
        self.renderer = make_renderer(settings, gate=CoordinatorGate(settings.namespace))
        self.current: tuple[str, int] | None = None
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
        self.current = (job.id, job.attempt)
        lease_ok = threading.Event()
        lease_ok.set()
        renewer = asyncio.create_task(self._renew_lease(job, lease_ok))
        clock = StageClock(check=lease_ok.is_set)
        try:
            artifacts = await asyncio.to_thread(run_stages, job, self.renderer, self.blobs, clock)
            renewer.cancel()
            ok = await asyncio.to_thread(
                self.store.succeed, job.id, job.attempt, artifacts, clock.timings
            )
            return AttemptResult(job.id, job.attempt, Status.SUCCEEDED if ok else None)
        except Aborted as exc:
            return AttemptResult(job.id, job.attempt, None, str(exc))
        except Exception as exc:
            renewer.cancel()
            return await self._end_failed(job, exc, clock.timings)
        finally:
            renewer.cancel()
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

    async def _renew_lease(self, job: Job, lease_ok: threading.Event) -> None:
        """Renew at a third of the lease; a refused renewal means stop (fencing)."""
        interval = self.settings.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                ok = await asyncio.to_thread(
                    self.store.renew, job.id, job.attempt, self.settings.lease_seconds
                )
            except Exception:  # the store is unreachable: keep trying while the lease lasts
                log.warning("lease renewal of job %s failed", job.id, exc_info=True)
                continue
            if not ok:
                lease_ok.clear()
                return
