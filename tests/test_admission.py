"""Per-owner admission on its own (a fake clock, no Ray), and the store's queued count."""

from __future__ import annotations

import pickle
import threading

import pytest

from scribble_ray.admission import Admission, AdmissionRefused
from scribble_ray.store import JobStore
from tests import store_fixtures
from tests.store_fixtures import new_job

store_target = store_fixtures.store_target
store = store_fixtures.store


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_of_the_per_minute_rate_then_one_per_refill() -> None:
    clock = Clock()
    admission = Admission(per_minute=6, max_queued=100, clock=clock)
    for _ in range(6):
        admission.admit("a", queued=0)
    with pytest.raises(AdmissionRefused) as refused:
        admission.admit("a", queued=0)
    assert refused.value.code == "rate_limited" and refused.value.retry_after == 10
    admission.admit("b", queued=0)  # owners have their own buckets
    clock.now += 9.9
    with pytest.raises(AdmissionRefused):
        admission.admit("a", queued=0)
    clock.now += 0.2  # a token every 10 s
    admission.admit("a", queued=0)
    assert admission.refused == 2


def test_the_queued_cap_refuses_without_spending_the_rate() -> None:
    admission = Admission(per_minute=1, max_queued=3, clock=Clock())
    with pytest.raises(AdmissionRefused) as refused:
        admission.admit("a", queued=3)
    assert refused.value.code == "too_many_queued_jobs" and refused.value.retry_after >= 1
    admission.admit("a", queued=2)  # the one token was not spent by the refusal


def test_refusals_survive_pickling() -> None:
    """Ray ships the error from the coordinator to the ingress."""
    copy = pickle.loads(pickle.dumps(AdmissionRefused("rate_limited", "slow down", 7)))
    assert (copy.code, copy.message, copy.retry_after) == ("rate_limited", "slow down", 7)


def test_count_queued_counts_one_owners_queued_jobs(store: JobStore) -> None:
    for owner in ("a", "a", "a", "b"):
        store.create(new_job(owner=owner))
    assert (store.count_queued("a"), store.count_queued("b"), store.count_queued("c")) == (3, 1, 0)
    claimed = store.claim("w", None, 30.0)
    assert claimed is not None
    store.cancel(next(j.id for j in store.list_jobs(owner="b")))
    assert store.count_queued(claimed.owner) == (2 if claimed.owner == "a" else 0)
    assert store.count_queued("b") == 0


def test_racing_submissions_cannot_overshoot_the_queued_cap(store: JobStore) -> None:
    """16 threads released together, each count-admit-insert through `admit_then`
    against the real store: exactly `max_queued` are inserted, the rest refused."""
    admission = Admission(per_minute=1_000, max_queued=5)
    barrier = threading.Barrier(16)
    refused: list[str] = []

    def submit() -> None:
        barrier.wait()
        try:
            admission.admit_then(
                "a", lambda: store.count_queued("a"), lambda: store.create(new_job(owner="a"))
            )
        except AdmissionRefused as error:
            refused.append(error.code)

    threads = [threading.Thread(target=submit) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.count_queued("a") == 5
    assert refused == ["too_many_queued_jobs"] * 11
