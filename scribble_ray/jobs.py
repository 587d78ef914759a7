"""Jobs, their states and the legal transitions. Pure: no Ray, no I/O."""

from __future__ import annotations

import random
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})

# The state machine of ARCHITECTURE.md; the stores guard every write with the
# source state, this table documents and tests them in one place.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.QUEUED: frozenset({Status.RUNNING, Status.CANCELLED}),
    Status.RUNNING: frozenset({Status.SUCCEEDED, Status.QUEUED, Status.FAILED, Status.CANCELLED}),
    Status.SUCCEEDED: frozenset(),
    Status.FAILED: frozenset(),
    Status.CANCELLED: frozenset(),
}


def can_transition(src: Status, dst: Status) -> bool:
    return dst in TRANSITIONS[src]


class Kind(StrEnum):
    IMAGE = "image"
    TEXT = "text"


class PageSize(StrEnum):
    A4 = "A4"
    LETTER = "Letter"


class Detail(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class Lane(StrEnum):
    """Interactive jobs are always claimed before batch jobs."""

    INTERACTIVE = "interactive"
    BATCH = "batch"


ARTIFACT_NAMES = ("edge.png", "coloring_page.pdf")
INPUT_NAME = "input"


def artifact_key(job_id: str, name: str) -> str:
    """Deterministic keys make every effect idempotent: a retry overwrites."""
    return f"jobs/{job_id}/{name}"


LINE_WEIGHT_RANGE = (0.5, 3.0)


@dataclass(frozen=True)
class JobOptions:
    page_size: PageSize = PageSize.A4
    detail: Detail = Detail.MEDIUM
    title: str | None = None
    line_weight: float = 1.0  # stroke width factor (local renderer)

    def __post_init__(self) -> None:
        if not LINE_WEIGHT_RANGE[0] <= self.line_weight <= LINE_WEIGHT_RANGE[1]:
            raise ValueError("line_weight must be a number from 0.5 to 3.0")

    def to_dict(self) -> dict[str, Any]:
        return {
            "page_size": self.page_size.value,
            "detail": self.detail.value,
            "title": self.title,
            "line_weight": self.line_weight,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobOptions:
        return cls(
            page_size=PageSize(data.get("page_size") or PageSize.A4),
            detail=Detail(data.get("detail") or Detail.MEDIUM),
            title=data.get("title") or None,
            line_weight=_line_weight(data.get("line_weight")),
        )


def _line_weight(value: Any) -> float:
    """A form field (text) or a JSON number; absent or empty means the default."""
    if value is None or value == "":
        return 1.0
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("line_weight must be a number from 0.5 to 3.0")
    try:
        return float(value)  # NaN and infinities fail the range check
    except ValueError:
        raise ValueError("line_weight must be a number from 0.5 to 3.0") from None


@dataclass
class NewJob:
    """What a submission asks for; the store turns it into a queued Job."""

    kind: Kind
    options: JobOptions
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    owner: str = "local"
    lane: Lane = Lane.INTERACTIVE
    prompt: str | None = None
    input_key: str | None = None
    idempotency_key: str | None = None
    max_attempts: int = 3
    source_job_id: str | None = None
    trace_id: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass
class Job:
    id: str
    kind: Kind
    status: Status
    attempt: int
    max_attempts: int
    options: JobOptions
    owner: str
    lane: Lane
    created_at: datetime
    prompt: str | None = None
    input_key: str | None = None
    idempotency_key: str | None = None
    source_job_id: str | None = None
    trace_id: str | None = None
    error: str | None = None
    error_code: str | None = None
    artifacts: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    run_after: datetime | None = None
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime | None = None

    def to_public(self) -> dict[str, Any]:
        """The job JSON of the public contract (artifact URLs are added by the ingress)."""
        return {
            "id": self.id,
            "kind": self.kind.value,
            "status": self.status.value,
            "attempt": self.attempt,
            "max_attempts": self.max_attempts,
            "error": ({"code": self.error_code, "message": self.error} if self.error else None),
            "options": self.options.to_dict(),
            "lane": self.lane.value,
            "source_job_id": self.source_job_id,
            "trace_id": self.trace_id,
            "artifacts": dict(self.artifacts),
            "timings": dict(self.timings),
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Attempt:
    """One row of the attempts ledger."""

    job_id: str
    attempt: int
    worker: str
    node: str | None
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None
    error: str | None = None

    def to_public(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt,
            "worker": self.worker,
            "node": self.node,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "outcome": self.outcome,
            "error": self.error,
        }


class Outcome(StrEnum):
    """How an attempt ended, as written to the ledger."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"  # permanent error, or attempts used up
    RETRY = "retry"  # transient error, job requeued
    LOST = "lost"  # worker died or its lease expired: job requeued
    CANCELLED = "cancelled"


class JobError(Exception):
    """An error a job can end with. `permanent` errors (bad input) are never retried."""

    code = "job_error"
    permanent = False

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code:
            self.code = code


class PermanentJobError(JobError):
    code = "bad_input"
    permanent = True


class TransientJobError(JobError):
    code = "transient"
    permanent = False


def backoff_seconds(
    attempt: int, base: float = 1.0, cap: float = 60.0, rng: random.Random | None = None
) -> float:
    """Exponential backoff with full jitter before attempt `attempt + 1`."""
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return (rng or random).uniform(ceiling / 2, ceiling)


def _iso(ts: datetime | None) -> str | None:
    return ts.astimezone(UTC).isoformat() if ts else None


def utc_from_epoch(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value is not None else None
