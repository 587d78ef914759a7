"""The cluster-wide call limiter on its own: concurrency, calls per window, 429 slow-down,
dead holders. Pure asyncio, no Ray; waits are event-driven, times are lower bounds."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from scribble_ray.limits import CallLimiter, LocalGate

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def settle() -> None:
    """Let every ready callback run (grants are made from the loop, not in release())."""
    for _ in range(5):
        await asyncio.sleep(0)


def limiter(**kw: float) -> CallLimiter:
    args: dict[str, float] = {
        "max_concurrency": 3,
        "max_per_window": 1000,
        "window_seconds": 60.0,
        "max_hold_seconds": 60.0,
    }
    args.update(kw)
    return CallLimiter(
        max_concurrency=int(args["max_concurrency"]),
        max_per_window=int(args["max_per_window"]),
        window_seconds=args["window_seconds"],
        max_hold_seconds=args["max_hold_seconds"],
    )


def start(lim: CallLimiter, holder: str) -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(lim.acquire(holder), name=holder)


async def test_never_more_than_max_concurrency_and_first_come_first_served() -> None:
    lim = limiter(max_concurrency=3)
    tasks = [start(lim, f"job-{i}") for i in range(6)]
    await settle()
    assert [t.done() for t in tasks] == [True] * 3 + [False] * 3
    assert lim.stats().in_flight == 3 and lim.stats().waiting == 3

    lim.release("job-1")
    await settle()
    assert [t.done() for t in tasks] == [True] * 4 + [False] * 2, "job-3 waited longest"
    for holder in ("job-0", "job-2", "job-3", "job-4", "job-5"):
        lim.release(holder)
        await settle()
    assert all(t.done() for t in tasks)
    assert lim.stats().max_in_flight == 3
    assert lim.stats().in_flight == 0


async def test_calls_per_window_are_limited() -> None:
    lim = limiter(max_concurrency=10, max_per_window=3, window_seconds=0.4)
    began = time.monotonic()
    for i in range(3):
        await lim.acquire(f"job-{i}")
        lim.release(f"job-{i}")
    fourth = start(lim, "job-3")
    await settle()
    assert not fourth.done(), "a 4th call inside the window must wait"
    await asyncio.wait_for(fourth, 5)
    assert time.monotonic() - began >= 0.4


async def test_429_stops_every_caller_until_retry_after_then_ramps_up() -> None:
    lim = limiter(max_concurrency=4)
    for i in range(4):
        await lim.acquire(f"job-{i}")
    waiting = [start(lim, f"next-{i}") for i in range(4)]
    await settle()

    throttled_at = time.monotonic()
    lim.release("job-0", throttled_for=0.5)
    for i in (1, 2, 3):
        lim.release(f"job-{i}")  # calls already under way end normally: no ramp-up
    await settle()
    assert not any(t.done() for t in waiting), "nobody starts before Retry-After"
    assert lim.stats().slow_down_for > 0.3
    assert lim.stats().limit == 2

    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED, timeout=5)
    assert time.monotonic() - throttled_at >= 0.5
    await settle()
    assert sum(t.done() for t in waiting) == 2, "after the pause: half the concurrency"

    lim.release("next-0")  # a call made after the 429 went through: one more at a time
    await settle()
    assert sum(t.done() for t in waiting) == 4
    assert lim.stats().limit == 3
    assert lim.stats().in_flight == 3


async def test_429s_halve_concurrency_down_to_one_and_successes_restore_it() -> None:
    lim = limiter(max_concurrency=8)
    for n, expected in enumerate([4, 2, 1, 1], start=1):
        await lim.acquire(f"job-{n}")
        lim.release(f"job-{n}", throttled_for=0.0)
        assert lim.stats().limit == expected
    await lim.acquire("a")
    second = start(lim, "b")
    await settle()
    assert not second.done(), "at limit 1 a second caller waits, though 7 permits are free"
    lim.release("a")
    await asyncio.wait_for(second, 1)
    lim.release("b")
    for n in range(10):
        await lim.acquire(f"ok-{n}")
        lim.release(f"ok-{n}")
    assert lim.stats().limit == 8


async def test_the_permit_of_a_dead_holder_goes_to_the_next_in_line() -> None:
    lim = limiter(max_concurrency=1)
    await lim.acquire("job-1/1")  # its worker dies mid-call and never releases
    other = start(lim, "job-2/1")
    await settle()
    assert not other.done()
    lim.forget("job-1/1")  # the coordinator learnt of the death from Ray
    await asyncio.wait_for(other, 1)
    assert lim.stats().reclaimed == 1 and lim.stats().in_flight == 1
    lim.forget("job-3/1")  # an attempt that held no permit: nothing changes
    lim.release("job-1/1")  # nor does a late release of a forgotten permit
    assert lim.stats().reclaimed == 1 and lim.stats().in_flight == 1


async def test_a_permit_held_past_max_hold_is_reclaimed() -> None:
    lim = limiter(max_concurrency=1, max_hold_seconds=0.3)
    await lim.acquire("dead")  # its worker died and its job never came back
    began = time.monotonic()
    await asyncio.wait_for(lim.acquire("alive"), 5)
    assert time.monotonic() - began >= 0.25
    assert lim.stats().reclaimed == 1
    lim.release("dead")  # a late release of a reclaimed permit changes nothing
    assert lim.stats().in_flight == 1


async def test_a_cancelled_waiter_does_not_block_the_queue() -> None:
    lim = limiter(max_concurrency=1)
    await lim.acquire("a")
    gone = start(lim, "gone")
    behind = start(lim, "behind")
    await settle()
    gone.cancel()
    await settle()
    lim.release("a")
    await asyncio.wait_for(behind, 1)
    assert lim.stats().in_flight == 1


def test_rejects_nonsense_limits() -> None:
    with pytest.raises(ValueError):
        CallLimiter(max_concurrency=0, max_per_window=1)


def test_local_gate_limits_threads() -> None:
    gate = LocalGate(limiter(max_concurrency=2))
    lock = threading.Lock()
    in_flight = peak = 0
    # Holders meet in pairs: with a limit of 2 every pair completes (the limit is
    # reachable), and a third holder at once would show in `peak`.
    pair = threading.Barrier(2, timeout=10)

    def call(i: int) -> None:
        nonlocal in_flight, peak
        gate.acquire(f"job-{i}")
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        pair.wait()
        with lock:
            in_flight -= 1
        gate.release(f"job-{i}")

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    gate.close()
    assert peak == 2
    assert gate.limiter.stats().granted == 8
