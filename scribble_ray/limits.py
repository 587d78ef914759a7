"""Cluster-wide limits on paid Gemini calls. Pure asyncio: no Ray, no I/O.

The coordinator owns one `CallLimiter` (it is the one place that sees all work);
every pipeline worker asks it for a permit before each HTTP call and hands the
permit back afterwards. A permit is granted when all of these hold:

- fewer than `limit` calls are in flight, where `limit` starts at
  `max_concurrency`, halves on every 429 and grows back by one per call that
  started after the last 429 and was not throttled (AIMD, as TCP does: a
  throttled fleet slows down together; calls already under way when the 429
  came say nothing about the rate after it);
- fewer than `max_per_window` calls started in the last `window_seconds`
  (a sliding log of start times: exact, and tiny at these rates);
- the "slow down until" time set by the last 429 (its Retry-After) has passed.

Waiters are served first come, first served. A permit is held by one attempt
of one job (`permit_holder`). The coordinator `forget`s the permit of an
attempt whose worker died mid-call the moment Ray reports the death (else the
calls of dead workers would block the live ones); a permit held longer than
`max_hold_seconds` is reclaimed as a last resort. A crash can never shrink the
fleet's budget for long.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from scribble_ray.settings import Settings


def permit_holder(job_id: str, attempt: int) -> str:
    """Who holds a permit: one attempt of one job (it makes one call at a time)."""
    return f"{job_id}/{attempt}"


class CallGate(Protocol):
    """What a renderer calls around each paid HTTP call (from a worker thread)."""

    def acquire(self, holder: str) -> None:
        """Block until the call may start."""

    def release(self, holder: str, *, throttled_for: float | None = None) -> None:
        """The call ended; `throttled_for` is the Retry-After of a 429, if it was one."""


@dataclass(frozen=True)
class LimiterStats:
    in_flight: int
    waiting: int
    limit: int  # current concurrency limit (AIMD), at most max_concurrency
    max_in_flight: int  # highest in_flight ever seen
    granted: int
    throttled: int  # releases that reported a 429
    reclaimed: int  # permits taken back from dead holders
    slow_down_for: float  # seconds until calls may start again after a 429

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class CallLimiter:
    def __init__(
        self,
        *,
        max_concurrency: int,
        max_per_window: int,
        window_seconds: float = 60.0,
        max_hold_seconds: float = 600.0,
    ) -> None:
        if max_concurrency < 1 or max_per_window < 1:
            raise ValueError("limits must be at least 1")
        self.max_concurrency = max_concurrency
        self.max_per_window = max_per_window
        self.window_seconds = window_seconds
        self.max_hold_seconds = max_hold_seconds
        self._limit = max_concurrency
        self._holders: dict[str, float] = {}  # holder -> when its permit was granted
        self._starts: deque[float] = deque()  # grant times within the window
        self._waiters: deque[tuple[str, asyncio.Future[None]]] = deque()
        self._slow_until = 0.0
        self._last_throttle = float("-inf")
        self._timer: asyncio.TimerHandle | None = None
        self._max_in_flight = 0
        self._granted = 0
        self._throttled = 0
        self._reclaimed = 0

    async def acquire(self, holder: str) -> None:
        """Wait for a permit for `holder` (see permit_holder)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((holder, future))
        self._pump()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(holder)  # granted, but the caller is gone
            self._pump()  # a cancelled waiter at the head must not block the rest
            raise

    def release(self, holder: str, *, throttled_for: float | None = None) -> None:
        """Give `holder`'s permit back; `throttled_for` is the server's Retry-After on a 429."""
        granted_at = self._holders.pop(holder, None)
        now = time.monotonic()
        if throttled_for is not None:
            self._throttled += 1
            self._last_throttle = now
            self._slow_until = max(self._slow_until, now + max(0.0, throttled_for))
            self._limit = max(1, self._limit // 2)
        elif granted_at is not None and granted_at > self._last_throttle:
            self._limit = min(self.max_concurrency, self._limit + 1)
        self._pump()

    def forget(self, holder: str) -> None:
        """`holder` is gone (its worker died): its permit, if it held one, is free again."""
        if self._holders.pop(holder, None) is not None:
            self._reclaimed += 1
            self._pump()

    def stats(self) -> LimiterStats:
        return LimiterStats(
            in_flight=len(self._holders),
            waiting=sum(1 for _, f in self._waiters if not f.done()),
            limit=self._limit,
            max_in_flight=self._max_in_flight,
            granted=self._granted,
            throttled=self._throttled,
            reclaimed=self._reclaimed,
            slow_down_for=max(0.0, self._slow_until - time.monotonic()),
        )

    # -- internals ---------------------------------------------------------------
    def _pump(self) -> None:
        """Grant permits to waiters in order while the limits allow; else arm a timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiters:
            holder, future = self._waiters[0]
            if future.done():  # cancelled while waiting
                self._waiters.popleft()
                continue
            now = time.monotonic()
            delay = self._delay(now)
            if delay > 0:
                self._timer = asyncio.get_running_loop().call_later(delay, self._pump)
                return
            self._waiters.popleft()
            self._holders[holder] = now
            self._starts.append(now)
            self._granted += 1
            self._max_in_flight = max(self._max_in_flight, len(self._holders))
            future.set_result(None)

    def _delay(self, now: float) -> float:
        """Seconds until the next permit may be granted (0: now). Never infinite: a
        full house waits for a release, or at the latest for its oldest permit to expire."""
        for holder, granted_at in list(self._holders.items()):
            if now - granted_at >= self.max_hold_seconds:
                del self._holders[holder]
                self._reclaimed += 1
        while self._starts and now - self._starts[0] >= self.window_seconds:
            self._starts.popleft()
        delays = [self._slow_until - now]
        if len(self._holders) >= self._limit:
            delays.append(min(self._holders.values()) + self.max_hold_seconds - now)
        if len(self._starts) >= self.max_per_window:
            delays.append(self._starts[0] + self.window_seconds - now)
        return max(0.0, *delays)


def gemini_limiter(settings: Settings) -> CallLimiter:
    """The Gemini limits of `settings`. A permit covers one HTTP call, so a permit held
    for twice the call timeout (plus slack for the cache write) belongs to a dead worker."""
    return CallLimiter(
        max_concurrency=settings.gemini_max_concurrency,
        max_per_window=settings.gemini_max_per_minute,
        window_seconds=60.0,
        max_hold_seconds=2 * settings.gemini_timeout_seconds + 30.0,
    )


class LocalGate:
    """A CallLimiter for one process, used from synchronous code (the CLI, tests).

    The limiter lives on a private event loop thread; in a cluster the
    coordinator plays this part for every worker at once."""

    def __init__(self, limiter: CallLimiter) -> None:
        self.limiter = limiter
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="call-gate", daemon=True).start()

    def acquire(self, holder: str) -> None:
        self._run(self.limiter.acquire(holder))

    def release(self, holder: str, *, throttled_for: float | None = None) -> None:
        self._run(self._release(holder, throttled_for))

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _release(self, holder: str, throttled_for: float | None) -> None:
        self.limiter.release(holder, throttled_for=throttled_for)
