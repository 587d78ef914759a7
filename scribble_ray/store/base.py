"""The JobStore: durable jobs, atomic claims and fenced transitions.

The SQL lives in one file per database (`sqlite.sql`, `postgres.sql`), loaded by
name; this module holds what both share: the contract, the row mapping and the
bookkeeping of stale (fenced-off) writes.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from importlib import resources
from typing import Any, NamedTuple, Protocol

from scribble_ray.jobs import (
    Attempt,
    Job,
    JobOptions,
    Kind,
    Lane,
    NewJob,
    Outcome,
    Status,
    utc_from_epoch,
)

log = logging.getLogger(__name__)

Row = Mapping[str, Any]


class Success(NamedTuple):
    """An attempt's successful end, as the worker reports it."""

    job_id: str
    attempt: int
    artifacts: dict[str, str]
    timings: dict[str, float]


class Tx(Protocol):
    """One transaction: run a named query, get rows as mappings."""

    def run(self, name: str, **params: Any) -> list[Row]: ...


def load_queries(filename: str, now_expr: str) -> dict[str, str]:
    """Split a .sql file into `-- name: x` blocks; NOW becomes the database clock."""
    text = resources.files("scribble_ray.store").joinpath(filename).read_text()
    queries: dict[str, str] = {}
    for block in re.split(r"^-- name: ", text, flags=re.MULTILINE)[1:]:
        name, _, body = block.partition("\n")
        queries[name.strip()] = re.sub(r"\bNOW\b", now_expr, body).strip()
    return queries


class JobStore(ABC):
    """Shared logic of the SQL stores. Methods are synchronous and thread-safe."""

    migrations: tuple[str, ...] = ("migration_1", "migration_2")

    def __init__(self) -> None:
        self._stale_lock = threading.Lock()
        self.stale_writes = 0

    # -- what each database provides ---------------------------------------------
    @abstractmethod
    def transaction(self) -> Any:
        """A context manager yielding a Tx; commits on success, rolls back on error."""

    @abstractmethod
    def close(self) -> None: ...

    def listen(self, on_notify: Callable[[], None], stop: threading.Event) -> None:
        """Call `on_notify` when another process inserts jobs; returns when `stop` is set.

        The default has no push channel: the coordinator's fallback poll covers it.
        """

    def _ledger_open(self, tx: Tx, job: Job, worker: str, node: str | None) -> None:
        """Open the attempt's ledger row (PostgreSQL does it inside the claim)."""

    def _ledger_close(
        self, tx: Tx, job_id: str, attempt: int, outcome: Outcome, message: str | None
    ) -> None:
        """Close the attempt's ledger row (PostgreSQL does it inside the write)."""

    # -- schema -----------------------------------------------------------------
    def migrate(self) -> int:
        """Apply the versioned migrations not yet applied; safe to call concurrently."""
        with self.transaction() as tx:
            self._lock_for_migration(tx)
            tx.run("create_version_table")
            current = int(tx.run("schema_version")[0]["version"])
            for version, name in enumerate(self.migrations, start=1):
                if version > current:
                    tx.run(name)
                    tx.run("record_version", version=version)
            return len(self.migrations)

    def _lock_for_migration(self, tx: Tx) -> None:
        """Serialize concurrent migrations (SQLite's write lock already does)."""

    # -- jobs -------------------------------------------------------------------
    def create(self, new: NewJob) -> tuple[Job, bool]:
        """Insert a queued job; with an idempotency key, return the existing one instead."""
        params = {
            "id": new.id,
            "kind": new.kind.value,
            "max_attempts": new.max_attempts,
            "options": self._json(new.options.to_dict()),
            "owner": new.owner,
            "lane": new.lane.value,
            "prompt": new.prompt,
            "input_key": new.input_key,
            "idempotency_key": new.idempotency_key,
            "source_job_id": new.source_job_id,
            "trace_id": new.trace_id,
        }
        with self.transaction() as tx:
            rows = tx.run("insert_job", **params)
            if rows:
                return self._job(rows[0]), True
            # A conflict: the same idempotency key, or the same id submitted again
            # (a retried call). Either way the existing job is the answer.
            existing = tx.run("get_job", id=new.id)
            if not existing and new.idempotency_key is not None:
                existing = tx.run(
                    "get_by_idempotency_key", owner=new.owner, idempotency_key=new.idempotency_key
                )
            if existing:
                return self._job(existing[0]), False
        raise RuntimeError(f"job {new.id} conflicted but no existing job was found")

    def get(self, job_id: str) -> Job | None:
        with self.transaction() as tx:
            rows = tx.run("get_job", id=job_id)
        return self._job(rows[0]) if rows else None

    def list_jobs(
        self,
        *,
        owner: str | None = None,
        status: Status | None = None,
        before: datetime | None = None,
        limit: int = 50,
    ) -> list[Job]:
        with self.transaction() as tx:
            rows = tx.run(
                "list_jobs",
                owner=owner,
                status=status.value if status else None,
                before=self._time(before),
                limit=limit,
            )
        return [self._job(r) for r in rows]

    def claim(self, worker: str, node: str | None, lease_seconds: float) -> Job | None:
        """Atomically claim the next runnable job for `worker`; attempt += 1."""
        jobs = self.claim_many(worker, node, lease_seconds, 1)
        return jobs[0] if jobs else None

    def claim_many(
        self, worker: str, node: str | None, lease_seconds: float, limit: int
    ) -> list[Job]:
        """Atomically claim up to `limit` runnable jobs for `worker`, in run order.

        One transaction: interactive jobs first (one statement), then the batch lane
        one row per statement, so its fairness across owners counts the rows just
        claimed. Each job gets its own attempt number and lease, as with `claim`.
        """
        params = {"worker": worker, "node": node, "lease": lease_seconds}
        with self.transaction() as tx:
            # RETURNING has no order: put the interactive rows back in run order.
            jobs = sorted(
                map(self._job, tx.run("claim", limit=limit, **params)),
                key=lambda j: (j.run_after, j.created_at),
            )
            while len(jobs) < limit and (rows := tx.run("claim_batch", **params)):
                jobs.append(self._job(rows[0]))
            for job in jobs:
                self._ledger_open(tx, job, worker, node)
        return jobs

    def renew(self, job_id: str, attempt: int, lease_seconds: float) -> bool:
        with self.transaction() as tx:
            ok = bool(tx.run("renew", id=job_id, attempt=attempt, lease=lease_seconds))
        return ok or self._stale("renew", job_id, attempt)

    def succeed(
        self, job_id: str, attempt: int, artifacts: dict[str, str], timings: dict[str, float]
    ) -> bool:
        return self.succeed_many([Success(job_id, attempt, artifacts, timings)])[0]

    def succeed_many(self, successes: Sequence[Success]) -> list[bool]:
        """Record several attempts' success in one transaction (one commit), each
        fenced on its own: a stale one is refused without affecting the others."""
        with self.transaction() as tx:
            written = self._succeed(tx, successes)
        return [
            (s.job_id, s.attempt) in written or self._stale("succeed", s.job_id, s.attempt)
            for s in successes
        ]

    def _succeed(self, tx: Tx, successes: Sequence[Success]) -> set[tuple[str, int]]:
        """The fenced writes; returns the (job id, attempt) pairs that were current.
        One statement per attempt here; PostgreSQL makes it one in all."""
        written = set()
        for s in successes:
            rows = tx.run(
                "succeed",
                id=s.job_id,
                attempt=s.attempt,
                artifacts=self._json(s.artifacts),
                timings=self._json(s.timings),
            )
            if rows:
                self._ledger_close(tx, s.job_id, s.attempt, Outcome.SUCCEEDED, None)
                written.add((s.job_id, s.attempt))
        return written

    def end_attempt(
        self,
        job_id: str,
        attempt: int,
        *,
        code: str,
        message: str,
        retry: bool,
        delay: float = 0.0,
        lost: bool = False,
        timings: dict[str, float] | None = None,
        require_expired: bool = False,
    ) -> Status | None:
        """End a failed attempt: requeue (after `delay`) while attempts are left, else fail.

        `retry=False` fails at once (a permanent error). Returns the new status, or
        None when the write was fenced off (the attempt is no longer current).
        """
        with self.transaction() as tx:
            rows = self._end_attempt_rows(
                tx, job_id, attempt, code, message, retry, delay, lost, timings, require_expired
            )
        if not rows:
            self._stale("end_attempt", job_id, attempt)
            return None
        return Status(rows[0]["status"])

    def _end_attempt_rows(
        self,
        tx: Tx,
        job_id: str,
        attempt: int,
        code: str,
        message: str,
        retry: bool,
        delay: float,
        lost: bool,
        timings: dict[str, float] | None,
        require_expired: bool,
    ) -> list[Row]:
        requeue_outcome = Outcome.LOST if lost else Outcome.RETRY
        rows = tx.run(
            "end_attempt",
            id=job_id,
            attempt=attempt,
            retry=retry,
            delay=delay,
            code=code,
            message=message,
            timings=self._json(timings) if timings is not None else None,
            require_expired=require_expired,
            outcome=requeue_outcome.value,
        )
        if rows:
            status = Status(rows[0]["status"])
            outcome = requeue_outcome if status is Status.QUEUED else Outcome.FAILED
            self._ledger_close(tx, job_id, attempt, outcome, message)
        return rows

    def rescue_expired(self, limit: int = 100) -> list[tuple[str, int, Status]]:
        """Requeue (or fail, when out of attempts) running jobs whose lease has expired."""
        with self.transaction() as tx:
            expired = [(r["id"], int(r["attempt"])) for r in tx.run("expired_leases", limit=limit)]
        rescued = []
        for job_id, attempt in expired:
            status = self.end_attempt(
                job_id,
                attempt,
                code="lease_expired",
                message=f"attempt {attempt} stopped renewing its lease",
                retry=True,
                lost=True,
                require_expired=True,
            )
            if status is not None:
                rescued.append((job_id, attempt, status))
        return rescued

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a queued or running job; a final job is returned unchanged."""
        with self.transaction() as tx:
            rows = tx.run("cancel", id=job_id)
            if rows:
                job = self._job(rows[0])
                if job.attempt:
                    self._ledger_close(tx, job_id, job.attempt, Outcome.CANCELLED, None)
                return job
            rows = tx.run("get_job", id=job_id)
        return self._job(rows[0]) if rows else None

    # -- views ------------------------------------------------------------------
    def attempts(self, job_id: str) -> list[Attempt]:
        with self.transaction() as tx:
            rows = tx.run("list_attempts", id=job_id)
        return [
            Attempt(
                job_id=r["job_id"],
                attempt=int(r["attempt"]),
                worker=r["worker"],
                node=r["node"],
                started_at=_dt(r["started_at"]),  # type: ignore[arg-type]
                finished_at=_dt(r["finished_at"]),
                outcome=r["outcome"],
                error=r["error"],
            )
            for r in rows
        ]

    def running(self) -> list[tuple[str, int, str | None]]:
        with self.transaction() as tx:
            rows = tx.run("running_jobs")
        return [(r["id"], int(r["attempt"]), r["lease_owner"]) for r in rows]

    def next_due_in(self) -> float | None:
        """Seconds until the next queued job may run (0: now); None when none is queued."""
        with self.transaction() as tx:
            value = tx.run("next_due_in")[0]["due_in"]
        return None if value is None else float(value)

    def counts(self) -> dict[str, Any]:
        with self.transaction() as tx:
            rows = tx.run("count_by_status")
        by_status = {s.value: 0 for s in Status}
        queued_by_lane = {lane.value: 0 for lane in Lane}
        for r in rows:
            by_status[r["status"]] += int(r["n"])
            if r["status"] == Status.QUEUED:
                queued_by_lane[r["lane"]] = queued_by_lane.get(r["lane"], 0) + int(r["n"])
        return {"by_status": by_status, "queued_by_lane": queued_by_lane}

    def count_queued(self, owner: str) -> int:
        """How many of `owner`'s jobs are queued (admission control)."""
        with self.transaction() as tx:
            return int(tx.run("count_queued_for_owner", owner=owner)[0]["n"])

    def overlapping_attempts(self) -> int:
        with self.transaction() as tx:
            return int(tx.run("overlapping_attempts")[0]["n"])

    # -- helpers ----------------------------------------------------------------
    def _stale(self, what: str, job_id: str, attempt: int) -> bool:
        with self._stale_lock:
            self.stale_writes += 1
        log.warning("stale %s rejected: job %s attempt %d is not current", what, job_id, attempt)
        return False

    def _json(self, value: Any) -> Any:
        return json.dumps(value)

    def _time(self, value: datetime | None) -> Any:
        return value

    def _job(self, row: Row) -> Job:
        return Job(
            id=row["id"],
            kind=Kind(row["kind"]),
            status=Status(row["status"]),
            attempt=int(row["attempt"]),
            max_attempts=int(row["max_attempts"]),
            options=JobOptions.from_dict(_loads(row["options"])),
            owner=row["owner"],
            lane=Lane(row["lane"]),
            prompt=row["prompt"],
            input_key=row["input_key"],
            idempotency_key=row["idempotency_key"],
            source_job_id=row["source_job_id"],
            trace_id=row["trace_id"],
            error=row["error"],
            error_code=row["error_code"],
            artifacts=_loads(row["artifacts"]),
            timings=_loads(row["timings"]),
            run_after=_dt(row["run_after"]),
            lease_owner=row["lease_owner"],
            lease_expires_at=_dt(row["lease_expires_at"]),
            created_at=_dt(row["created_at"]),  # type: ignore[arg-type]
            started_at=_dt(row["started_at"]),
            finished_at=_dt(row["finished_at"]),
            updated_at=_dt(row["updated_at"]),
        )


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else (value or {})


def _dt(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return utc_from_epoch(float(value))
