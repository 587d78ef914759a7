"""The Coordinator: the one place jobs are claimed and handed to pipeline workers.

A submission claims for an idle worker right after its insert, or wakes the
dispatch loop, which claims for every idle worker (no polling between submit and
start). Each claim is one atomic statement in the store, for one reserved idle
worker, of up to `jobs_per_call` jobs. Deaths are learnt from Ray
(ActorDiedError) or, for anything Ray cannot see, from expired leases.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from scribble_ray.admission import Admission
from scribble_ray.events import JobEvents
from scribble_ray.jobs import Attempt, Job, NewJob, Status
from scribble_ray.limits import CallLimiter, gemini_limiter, permit_holder
from scribble_ray.metrics import get_metrics
from scribble_ray.pipeline import AttemptResult, PipelineWorker
from scribble_ray.settings import Settings
from scribble_ray.store import open_store
from scribble_ray.summary import summarise

log = logging.getLogger(__name__)
T = TypeVar("T")

COORDINATOR_NAME = "coordinator"
GAUGE_SECONDS = 10.0
RECENT_JOBS = 500  # GET /stats summarises the latest jobs


@dataclass
class Slot:
    """One pipeline worker and the attempts handed to it (empty: idle)."""

    name: str
    actor: Any
    node: str | None = None  # known once the worker has started
    jobs: list[Job] = field(default_factory=list)
    claiming: bool = False  # a claim for this worker is in flight
    idle_since: float = field(default_factory=time.monotonic)


class Coordinator:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.epoch = uuid.uuid4().hex[:6]  # tells this incarnation's workers apart
        self.store = open_store(settings.store_url)
        self._db = ThreadPoolExecutor(max_workers=4, thread_name_prefix="store")
        self._slots: list[Slot] = []
        self._next_worker = 0
        self._wake = asyncio.Event()
        self._events = JobEvents()
        self._metrics = get_metrics()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.dispatched = 0
        self.worker_deaths = 0
        for _ in range(settings.pool_min):
            self._add_worker()
        self._spawn(self._dispatch_loop())
        self._spawn(self._rescue_loop())
        self._spawn(self._gauges_loop())
        # Jobs inserted straight into the table by other services wake us too.
        self._stop_listening = threading.Event()
        loop = asyncio.get_running_loop()
        threading.Thread(
            target=self.store.listen,
            args=(lambda: loop.call_soon_threadsafe(self._wake.set), self._stop_listening),
            name="store-listen",
            daemon=True,
        ).start()

    def __repr__(self) -> str:
        return f"coordinator-{self.epoch}"

    # -- the public API (called by ingress replicas, clients and tests) ----------
    async def ping(self) -> str:
        return self.epoch

    async def submit(self, new: NewJob) -> tuple[Job, bool]:
        """Make the job durable, then start work. Returns (job, created).

        With a worker idle, the insert is followed at once, in the same store thread,
        by the usual claim for that worker (the oldest runnable job, often this one):
        no hop through the dispatch loop between a job's insert and its start.

        Raises AdmissionRefused (HTTP 429) when the owner is over its submission rate or
        its queued-jobs cap; count and insert are serialized per owner, so concurrent
        submissions through many replicas cannot overshoot the cap.
        """
        slot = self._idle_slot()
        with self._claiming(slot):
            job, created, claimed = await self._call(self._admit_then_claim, new, slot)
        if created:
            self._accepted(job)
        if slot is not None and claimed:
            self._hand_over(slot, claimed)
        if created and all(j.id != job.id for j in claimed):
            self._wake.set()  # not claimed here (perhaps an older job was): the loop's turn
        return job, created

    def _admit_then_claim(self, new: NewJob, slot: Slot | None) -> tuple[Job, bool, list[Job]]:
        """(In a store thread: one hop per submission.) Only count and insert hold the
        owner's lock; the claim runs beside other submissions. A failed claim is not
        the submission's failure: the job is durable, and the dispatch loop claims it
        later."""
        job, created = self._admission.admit_then(
            new.owner, lambda: self.store.count_queued(new.owner), lambda: self.store.create(new)
        )
        if not created or slot is None:
            return job, created, []
        try:
            return job, created, self._claim_for(slot)
        except Exception:
            log.exception("claim after submit failed; left to the dispatch loop")
            return job, created, []

    def _claim_for(self, slot: Slot) -> list[Job]:
        return self.store.claim_many(
            slot.name, slot.node, self.settings.lease_seconds, self.settings.jobs_per_call
        )

    async def submit_many(self, news: list[NewJob]) -> list[tuple[Job, bool]]:
        """A batch in one call: every job durable before any is reported accepted."""
        results = await self._call(lambda: [self.store.create(n) for n in news])
        for job, created in results:
            if created:
                self._accepted(job)
        self._wake.set()
        return results

    @cached_property
    def _admission(self) -> Admission:
        """Per-owner limits (issue #9): made on first use, in memory (a restart refills)."""
        return Admission(
            self.settings.max_submissions_per_minute, self.settings.max_queued_per_owner
        )

    def _accepted(self, job: Job) -> None:
        self._events.record(job.id, job.status, job.attempt)
        self._metrics.jobs_submitted.inc(tags={"kind": job.kind.value, "lane": job.lane.value})

    async def get(self, job_id: str) -> Job | None:
        return await self._call(self.store.get, job_id)

    async def wait(self, job_id: str, seen: Status | None, timeout: float) -> Job | None:
        """Return the job once its status differs from `seen` or it is final (long-poll)."""
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            event = self._events.waiter(job_id)
            try:
                job = await self.get(job_id)
                if job is None or job.status.final or job.status != seen:
                    return job
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return job
                try:
                    await asyncio.wait_for(event.wait(), remaining)
                except TimeoutError:
                    return await self.get(job_id)
            finally:
                self._events.forget(job_id, event)

    async def events(self, job_id: str, after: int, timeout: float) -> list[dict[str, Any]]:
        """Status changes of a job after the first `after` ones (for SSE streams)."""
        return await self._events.wait_since(job_id, after, timeout)

    async def cancel(self, job_id: str) -> Job | None:
        job = await self._call(self.store.cancel, job_id)
        if job is not None:
            self._events.record(job_id, job.status, job.attempt)
        return job

    async def attempts(self, job_id: str) -> list[Attempt]:
        return await self._call(self.store.attempts, job_id)

    async def list_jobs(self, **filters: Any) -> list[Job]:
        return await self._call(lambda: self.store.list_jobs(**filters))

    async def stats(self) -> dict[str, Any]:
        counts = await self._call(self.store.counts)
        recent = await self._call(lambda: self.store.list_jobs(limit=RECENT_JOBS))
        return {
            **counts,
            "recent": summarise(recent),
            "pool": {
                "size": len(self._slots),
                "busy": sum(1 for s in self._slots if s.jobs),
                "min": self.settings.pool_min,
                "max": self.settings.pool_max,
            },
            "dispatched": self.dispatched,
            "worker_deaths": self.worker_deaths,
            "stale_writes_rejected": self.store.stale_writes,
            "epoch": self.epoch,
        }

    async def workers(self) -> list[dict[str, Any]]:
        return [
            {
                "name": s.name,
                "node": s.node,
                "job": s.jobs[0].id if s.jobs else None,  # the first (usually only) one
                "jobs": [j.id for j in s.jobs],
            }
            for s in self._slots
        ]

    # -- Gemini call limits (issue #4) -------------------------------------------
    # Pipeline workers ask here before every paid Gemini call: the one place that
    # sees all work enforces the cluster-wide limits (concurrency, calls per
    # minute), and a 429 seen by any worker slows every worker down. Made on first
    # use; a restarted coordinator starts afresh (earlier permits just lapse).
    @cached_property
    def _gemini_limits(self) -> CallLimiter:
        return gemini_limiter(self.settings)

    async def gemini_acquire(self, holder: str) -> None:
        """Wait until `holder` (a job's attempt, limits.permit_holder) may start one call."""
        await self._gemini_limits.acquire(holder)

    async def gemini_release(self, holder: str, *, throttled_for: float | None = None) -> None:
        """`holder`'s call ended; `throttled_for`: the Retry-After of a 429, in seconds."""
        self._gemini_limits.release(holder, throttled_for=throttled_for)

    async def gemini_stats(self) -> dict[str, Any]:
        return self._gemini_limits.stats().as_dict()

    def _gemini_attempt_ended(self, job: Job) -> None:
        """Called by _run for every attempt: one whose worker died mid-call never gave
        its permit back, and the live workers must not wait for it (no-op otherwise)."""
        self._gemini_limits.forget(permit_holder(job.id, job.attempt))

    # -- end of Gemini call limits ------------------------------------------------

    # -- dispatch ----------------------------------------------------------------
    async def _dispatch_loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                due_in = await self._dispatch_ready()
            except Exception:
                log.exception("dispatch failed; retrying")
                due_in = 1.0
            timeout = self.settings.fallback_poll_seconds
            if due_in is not None:
                timeout = min(timeout, due_in)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _dispatch_ready(self) -> float | None:
        """Claim work for every idle worker. Returns seconds until the next job is due."""
        while True:
            slot = self._idle_slot()
            if slot is None:
                return None  # a finishing worker wakes us
            with self._claiming(slot):
                jobs = await self._call(self._claim_for, slot)
            if not jobs:
                self._shrink_idle_pool()
                return await self._call(self.store.next_due_in)
            self._hand_over(slot, jobs)

    @contextlib.contextmanager
    def _claiming(self, slot: Slot | None) -> Iterator[None]:
        """Reserve an idle worker while a claim for it is in flight (the dispatch loop
        and submissions claim concurrently; never two claims for one worker)."""
        if slot is None:
            yield
            return
        slot.claiming = True
        try:
            yield
        finally:
            slot.claiming = False

    def _hand_over(self, slot: Slot, jobs: list[Job]) -> None:
        slot.jobs = jobs
        self.dispatched += len(jobs)
        for job in jobs:
            self._claimed(job)
        self._spawn(self._run(slot, jobs))

    def _claimed(self, job: Job) -> None:
        self._events.record(job.id, Status.RUNNING, job.attempt)
        if job.started_at and job.run_after:
            pickup = max(0.0, (job.started_at - job.run_after).total_seconds())
            self._metrics.pickup_latency.observe(pickup, tags={"lane": job.lane.value})

    def _ended(self, job: Job, status: Status | None, outcome: str) -> None:
        """Record how an attempt ended; `status` None: fenced off, nothing changed."""
        self._metrics.attempts_ended.inc(tags={"outcome": outcome})
        if status is None:
            self._events.poke(job.id)
            return
        self._events.record(job.id, status, job.attempt)
        if status.final:
            self._metrics.jobs_finished.inc(tags={"outcome": status.value})
            self._metrics.attempts_per_job.observe(job.attempt)

    def _idle_slot(self) -> Slot | None:
        """An idle worker that has started. A claim's lease starts ticking at once, so
        never claim for a worker still starting up (it wakes us when it is ready)."""
        idle = next(
            (s for s in self._slots if not s.jobs and not s.claiming and s.node is not None),
            None,
        )
        growing = any(s.node is None for s in self._slots)  # grow one worker at a time
        if idle is None and not growing and len(self._slots) < self.settings.pool_max:
            self._add_worker()
        return idle

    async def _run(self, slot: Slot, jobs: list[Job]) -> None:
        unfinished = jobs  # attempts whose end the worker has not reported
        try:
            results: list[AttemptResult] = await asyncio.wait_for(
                slot.actor.run_many.remote(jobs), self.settings.job_timeout_seconds * len(jobs)
            )
            unfinished = []
            for job, result in zip(jobs, results, strict=True):
                if result.status is None:
                    log.info(
                        "attempt %d of job %s was fenced off: %s",
                        job.attempt,
                        job.id,
                        result.error,
                    )
                self._ended(job, result.status, result.status.value if result.status else "fenced")
        except ActorUnavailableError:
            # Unreachable is not dead: the attempts may still be running and renewing
            # their leases. Stop using the worker; the leases decide what is requeued.
            log.warning(
                "pipeline worker %s unreachable; %d job(s) left to their leases",
                slot.name,
                len(jobs),
            )
            ray.kill(slot.actor, no_restart=True)
            self._replace(slot)
        except (ActorDiedError, RayActorError) as exc:
            # Ray saw the worker process die: its attempts are lost, requeue at once.
            self.worker_deaths += 1
            self._metrics.worker_deaths.inc()
            self._replace(slot)
            await self._lost(
                unfinished, "worker_died", f"pipeline worker {slot.name} died: {_short(exc)}"
            )
        except TimeoutError:
            ray.kill(slot.actor, no_restart=True)
            self._replace(slot)
            await self._lost(
                unfinished,
                "timeout",
                f"attempt exceeded {self.settings.job_timeout_seconds:.0f} s",
            )
        except Exception as exc:
            log.exception("jobs %s: unexpected error", [j.id for j in jobs])
            await self._lost(unfinished, "internal_error", _short(exc))
        finally:
            if slot.jobs is jobs:
                slot.jobs = []
                slot.idle_since = time.monotonic()
            for job in jobs:
                self._gemini_attempt_ended(job)  # (issue #4: a dead worker's Gemini permit)
            self._wake.set()

    async def _lost(self, jobs: list[Job], code: str, message: str) -> None:
        """End the attempts a dead (or timed-out) worker was given and had not ended.

        In a batch the worker wrote each result as it went: those attempts are no
        longer running and are left alone (not counted as fenced-off writes)."""
        if len(jobs) > 1:
            current = await self._call(lambda: [self.store.get(j.id) for j in jobs])
            jobs = [
                j
                for j, now in zip(jobs, current, strict=True)
                if now is not None and now.status is Status.RUNNING and now.attempt == j.attempt
            ]
        for job in jobs:
            status = await self._call(
                lambda job=job: self.store.end_attempt(
                    job.id, job.attempt, code=code, message=message, retry=True, lost=True
                )
            )
            self._ended(job, status, "lost")

    async def _rescue_loop(self) -> None:
        """Requeue attempts whose lease expired (their worker is gone or cut off)."""
        interval = max(0.2, self.settings.lease_seconds / 2)
        while True:
            await asyncio.sleep(interval)
            try:
                rescued = await self._call(self.store.rescue_expired)
            except Exception:
                log.exception("lease rescue failed")
                continue
            for job_id, attempt, status in rescued:
                log.warning("job %s attempt %d lease expired: now %s", job_id, attempt, status)
                self._events.record(job_id, status, attempt)
                self._metrics.attempts_ended.inc(tags={"outcome": "lease_expired"})
            if rescued:
                self._wake.set()

    async def _gauges_loop(self) -> None:
        """Publish the gauges, and the overlap alarm, which must stay 0."""
        stale_reported = 0
        while True:
            try:
                counts = await self._call(self.store.counts)
                overlaps = await self._call(self.store.overlapping_attempts)
            except Exception:
                log.exception("gauge update failed")
            else:
                for lane, n in counts["queued_by_lane"].items():
                    self._metrics.queue_depth.set(n, tags={"lane": lane})
                self._metrics.overlapping_attempts.set(overlaps)
                if overlaps:
                    log.error("ALARM: %d overlapping attempts in the ledger", overlaps)
            self._metrics.pool_size.set(len(self._slots))
            stale = self.store.stale_writes
            if stale > stale_reported:
                self._metrics.stale_writes.inc(stale - stale_reported)
                stale_reported = stale
            await asyncio.sleep(GAUGE_SECONDS)

    # -- the pool ----------------------------------------------------------------
    def _add_worker(self) -> Slot:
        # Named per incarnation: readable in the dashboard, and a restarted coordinator
        # never collides with the workers of the one before, which Ray is tearing down.
        name = f"pipeline-{self._next_worker}@{self.epoch}"
        self._next_worker += 1
        actor = (
            ray.remote(PipelineWorker)
            .options(
                name=name,
                namespace=self.settings.namespace,
                num_cpus=self.settings.pipeline_num_cpus,
                max_restarts=0,
                scheduling_strategy="SPREAD",  # across nodes: one node's loss costs few
            )
            .remote(self.settings, name)
        )
        slot = Slot(name=name, actor=actor)
        self._slots.append(slot)
        self._spawn(self._learn_node(slot))
        return slot

    async def _learn_node(self, slot: Slot) -> None:
        """Wait for a new worker to start; it is dispatched to from then on."""
        try:
            slot.node = (await slot.actor.info.remote())["node"]
        except RayActorError:
            log.warning("pipeline worker %s failed to start", slot.name)
            self._replace(slot)
        self._wake.set()

    def _replace(self, slot: Slot) -> None:
        if slot in self._slots:
            self._slots.remove(slot)
        while len(self._slots) < self.settings.pool_min:
            self._add_worker()

    def _shrink_idle_pool(self) -> None:
        now = time.monotonic()
        for slot in list(self._slots):
            if len(self._slots) <= self.settings.pool_min:
                return
            idle = not slot.jobs and not slot.claiming
            if idle and now - slot.idle_since > self.settings.pool_idle_seconds:
                self._slots.remove(slot)
                ray.kill(slot.actor, no_restart=True)

    # -- plumbing ----------------------------------------------------------------
    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking store call off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._db, fn, *args)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def get_or_create_coordinator(settings: Settings) -> Any:
    """The one coordinator of a namespace: created once, restarted by Ray if it dies."""
    return (
        ray.remote(Coordinator)
        .options(
            name=COORDINATOR_NAME,
            namespace=settings.namespace,
            get_if_exists=True,
            lifetime="detached",
            max_restarts=-1,
            max_task_retries=3,
            max_concurrency=1000,
            num_cpus=settings.coordinator_num_cpus,
        )
        .remote(settings)
    )
