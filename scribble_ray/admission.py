"""Per-owner admission: submissions per minute (a token bucket) and queued jobs per owner.

No Ray, no I/O: the Coordinator holds one `Admission`, because it sees every
replica's submissions, and checks it in its store threads, next to the count it
needs. A refusal is an `AdmissionRefused` the ingress maps to 429.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

QUEUE_FULL_RETRY_SECONDS = 5
T = TypeVar("T")


class AdmissionRefused(Exception):
    """The owner is over a limit; `retry_after`: whole seconds until it may try again."""

    def __init__(self, code: str, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.code, self.message, self.retry_after = code, message, retry_after

    def __reduce__(self) -> tuple[type[AdmissionRefused], tuple[str, str, int]]:
        # Keep the fields across pickling (Ray ships errors between processes).
        return type(self), (self.code, self.message, self.retry_after)


@dataclass
class TokenBucket:
    """`capacity` tokens, refilled at `per_second`; one token per submission."""

    capacity: float
    per_second: float
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """Take a token: 0.0 when granted, else the seconds until one is available."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.per_second)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.per_second


class Admission:
    def __init__(
        self,
        per_minute: int,
        max_queued: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_minute, self.max_queued, self._clock = per_minute, max_queued, clock
        self._buckets: dict[str, TokenBucket] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._mutex = threading.Lock()  # admit runs in the coordinator's store threads
        self.refused = 0

    def admit_then(self, owner: str, count_queued: Callable[[], int], insert: Callable[[], T]) -> T:
        """Count `owner`'s queued jobs, admit one more, insert it: all under the owner's
        lock, so concurrent submissions (many threads, many replicas) cannot overshoot
        the cap. Raises AdmissionRefused before inserting anything."""
        with self._mutex:
            lock = self._locks.setdefault(owner, threading.Lock())
        with lock:
            self.admit(owner, count_queued())
            return insert()

    def admit(self, owner: str, queued: int) -> None:
        """Raise AdmissionRefused, or count one submission of `owner` (`queued` now queued)."""
        with self._mutex:
            if queued >= self.max_queued:
                self.refused += 1
                raise AdmissionRefused(
                    "too_many_queued_jobs",
                    f"{queued} of your jobs are queued (the limit is {self.max_queued}); "
                    "wait for some to finish",
                    QUEUE_FULL_RETRY_SECONDS,
                )
            now = self._clock()
            bucket = self._buckets.get(owner)
            if bucket is None:
                bucket = TokenBucket(self.per_minute, self.per_minute / 60.0, self.per_minute, now)
                self._buckets[owner] = bucket
            wait = bucket.take(now)
            if wait > 0:
                self.refused += 1
                raise AdmissionRefused(
                    "rate_limited",
                    f"at most {self.per_minute} submissions per minute; "
                    f"retry in {math.ceil(wait)} s",
                    max(1, math.ceil(wait)),
                )
