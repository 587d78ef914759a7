"""The JobStore contract, run against SQLite and PostgreSQL alike."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import TypeVar

import pytest

from scribble_ray.jobs import (
    Detail,
    Job,
    JobOptions,
    Kind,
    Lane,
    NewJob,
    Outcome,
    PageSize,
    Status,
)
from scribble_ray.store import JobStore
from scribble_ray.store.base import Success
from tests import store_fixtures
from tests.store_fixtures import EXPIRED, StoreTarget, new_job, seed_jobs

# The fixtures, bound here explicitly (tests/conftest.py belongs to the service tests).
store_target = store_fixtures.store_target
store = store_fixtures.store

T = TypeVar("T")


def _aware(ts: datetime | None) -> bool:
    return ts is not None and ts.tzinfo is not None and ts.utcoffset() is not None


def _seconds(a: datetime | None, b: datetime | None) -> float:
    assert a is not None and b is not None
    return (a - b).total_seconds()


def _wait_for(predicate: Callable[[], T], timeout: float = 5.0, step: float = 0.005) -> T:
    """Poll `predicate` (a store query) until it is truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(step)


def _run_together(n: int, fn: Callable[[int], T]) -> list[T]:
    """Run fn(0..n-1) on n threads released together by a barrier; re-raise errors."""
    barrier = threading.Barrier(n)

    def go(i: int) -> T:
        barrier.wait(timeout=30)
        return fn(i)

    with ThreadPoolExecutor(n) as pool:
        return [f.result(timeout=120) for f in [pool.submit(go, i) for i in range(n)]]


# -- schema ---------------------------------------------------------------------------


def test_migrate_is_idempotent(store_target: StoreTarget) -> None:
    s = store_target.open(migrate=False)
    latest = len(s.migrations)
    assert s.migrate() == latest
    assert s.migrate() == latest
    job, _ = s.create(new_job())
    assert s.migrate() == latest
    assert s.get(job.id) is not None  # re-running migrations kept the data
    versions = store_target.execute("SELECT version FROM schema_version ORDER BY version")
    assert versions == [(v,) for v in range(1, latest + 1)]


def test_migrate_concurrently_from_four_threads(store_target: StoreTarget) -> None:
    # Four instances (own connections) open a brand-new database at the same moment.
    stores = _run_together(4, lambda _: store_target.open(migrate=True))
    latest = len(stores[0].migrations)
    assert _run_together(4, lambda i: stores[i].migrate()) == [latest] * 4
    assert store_target.execute("SELECT count(*) FROM schema_version") == [(latest,)]
    job, created = stores[0].create(new_job())
    assert created
    assert [s.get(job.id) is not None for s in stores] == [True] * 4


# -- create / get ---------------------------------------------------------------------


def test_create_get_round_trip(store: JobStore) -> None:
    new = NewJob(
        kind=Kind.IMAGE,
        options=JobOptions(page_size=PageSize.LETTER, detail=Detail.HIGH, title="My cat"),
        owner="alice",
        lane=Lane.BATCH,
        input_key="inputs/abc",
        max_attempts=5,
        source_job_id="parent-1",
    )
    job, created = store.create(new)
    assert created
    got = store.get(new.id)
    assert got is not None
    assert got == job
    assert got.id == new.id
    assert got.kind is Kind.IMAGE
    assert got.status is Status.QUEUED
    assert got.attempt == 0
    assert got.max_attempts == 5
    assert got.options == JobOptions(page_size=PageSize.LETTER, detail=Detail.HIGH, title="My cat")
    assert got.owner == "alice"
    assert got.lane is Lane.BATCH
    assert got.input_key == "inputs/abc"
    assert got.prompt is None
    assert got.source_job_id == "parent-1"
    assert got.trace_id == new.trace_id
    assert got.artifacts == {} and got.timings == {}
    assert got.error is None and got.error_code is None
    assert got.lease_owner is None and got.lease_expires_at is None
    assert got.started_at is None and got.finished_at is None
    for ts in (got.created_at, got.updated_at, got.run_after):
        assert _aware(ts), ts
    assert abs(_seconds(got.created_at, datetime.now(got.created_at.tzinfo))) < 60

    text, _ = store.create(new_job(prompt="a dragon"))
    got_text = store.get(text.id)
    assert got_text is not None
    assert got_text.kind is Kind.TEXT and got_text.prompt == "a dragon"
    assert got_text.options == JobOptions()
    assert store.get("no-such-job") is None


def test_resubmitting_the_same_id_returns_the_existing_job(store: JobStore) -> None:
    new = new_job()
    first, created = store.create(new)
    assert created
    again, created_again = store.create(new)  # a retried call: same id, no new job
    assert not created_again
    assert again == first
    assert store.counts()["by_status"]["queued"] == 1


def test_idempotency_key_returns_the_same_job_per_owner(store: JobStore) -> None:
    first, created = store.create(new_job(owner="alice", idempotency_key="k1"))
    assert created
    again, created_again = store.create(new_job(owner="alice", idempotency_key="k1"))
    assert not created_again
    assert again.id == first.id
    assert again == store.get(first.id)
    # The key is scoped per owner: bob's k1 is a different job.
    bobs, bob_created = store.create(new_job(owner="bob", idempotency_key="k1"))
    assert bob_created and bobs.id != first.id
    other, other_created = store.create(new_job(owner="alice", idempotency_key="k2"))
    assert other_created and other.id != first.id
    assert store.counts()["by_status"]["queued"] == 3


def test_idempotency_key_survives_the_job_moving_on(store: JobStore) -> None:
    job, _ = store.create(new_job(idempotency_key="k"))
    claimed = store.claim("w", None, 30)
    assert claimed is not None and claimed.id == job.id
    again, created = store.create(new_job(idempotency_key="k"))
    assert not created
    assert again.id == job.id and again.status is Status.RUNNING


# -- claiming -------------------------------------------------------------------------


def test_claim_order_interactive_before_batch_fifo_within_lane(store: JobStore) -> None:
    b1 = store.create(new_job(lane=Lane.BATCH))[0].id
    i1 = store.create(new_job(lane=Lane.INTERACTIVE))[0].id
    b2 = store.create(new_job(lane=Lane.BATCH))[0].id
    i2 = store.create(new_job(lane=Lane.INTERACTIVE))[0].id
    i3 = store.create(new_job(lane=Lane.INTERACTIVE))[0].id
    order = []
    while (job := store.claim("w", None, 30)) is not None:
        order.append(job.id)
    assert order == [i1, i2, i3, b1, b2]


def test_claim_many_takes_several_in_claim_order_each_with_its_own_attempt(
    store: JobStore,
) -> None:
    b1 = store.create(new_job(lane=Lane.BATCH))[0].id
    i1 = store.create(new_job(lane=Lane.INTERACTIVE))[0].id
    b2 = store.create(new_job(lane=Lane.BATCH))[0].id
    i2 = store.create(new_job(lane=Lane.INTERACTIVE))[0].id
    i3 = store.create(new_job(lane=Lane.INTERACTIVE))[0].id
    first = store.claim_many("w", "node-a", 30, 4)
    assert [j.id for j in first] == [i1, i2, i3, b1]
    assert {(j.status, j.attempt, j.lease_owner) for j in first} == {(Status.RUNNING, 1, "w")}
    assert [j.id for j in store.claim_many("w", "node-a", 30, 4)] == [b2]
    assert store.claim_many("w", "node-a", 30, 4) == []
    for job_id in (i1, b1, b2):  # every claimed attempt has its open ledger row
        [attempt] = store.attempts(job_id)
        assert (attempt.attempt, attempt.worker, attempt.node, attempt.outcome) == (
            1,
            "w",
            "node-a",
            None,
        )
    assert store.succeed(i2, 1, {}, {})  # each one is fenced on its own
    assert not store.succeed(i2, 1, {}, {})


def test_claim_skips_jobs_not_yet_due_and_next_due_in_reports_them(store: JobStore) -> None:
    assert store.next_due_in() is None  # nothing queued at all
    job, _ = store.create(new_job(lane=Lane.INTERACTIVE))
    assert store.next_due_in() == 0.0
    claimed = store.claim("w", None, 30)
    assert claimed is not None and claimed.id == job.id
    assert store.next_due_in() is None  # the only job is running
    assert store.end_attempt(job.id, 1, code="x", message="later", retry=True, delay=30) is (
        Status.QUEUED
    )
    later = store.get(job.id)
    assert later is not None
    assert later.status is Status.QUEUED and _aware(later.run_after)
    assert 29.9 < _seconds(later.run_after, later.updated_at) <= 30.01
    assert store.claim("w", None, 30) is None  # queued but not runnable yet
    due_in = store.next_due_in()
    assert due_in is not None and 29.0 < due_in <= 30.0

    # A due batch job is claimed even though an older interactive job waits.
    batch, _ = store.create(new_job(lane=Lane.BATCH))
    assert store.next_due_in() == 0.0
    got = store.claim("w", None, 30)
    assert got is not None and got.id == batch.id
    assert store.claim("w", None, 30) is None
    still = store.get(job.id)
    assert still is not None and still.status is Status.QUEUED and still.attempt == 1


def test_claim_increments_attempt_and_leases_from_the_db_clock(store: JobStore) -> None:
    job, _ = store.create(new_job())
    assert store.claim("w", None, 30) is not None
    assert store.end_attempt(job.id, 1, code="x", message="retry", retry=True) is Status.QUEUED
    claimed = store.claim("worker-7", "node-a", 30)
    assert claimed is not None
    assert claimed.id == job.id
    assert claimed.status is Status.RUNNING
    assert claimed.attempt == 2
    assert claimed.lease_owner == "worker-7"
    assert claimed.error is None and claimed.error_code is None  # cleared by the claim
    assert _aware(claimed.lease_expires_at) and _aware(claimed.started_at)
    # Both come from the same database clock reading (to within a few ms).
    assert abs(_seconds(claimed.lease_expires_at, claimed.started_at) - 30) < 0.05
    assert claimed == store.get(job.id)
    assert store.running() == [(job.id, 2, "worker-7")]
    ledger = store.attempts(job.id)
    assert [(a.attempt, a.worker, a.outcome) for a in ledger] == [
        (1, "w", Outcome.RETRY),
        (2, "worker-7", None),
    ]
    assert ledger[1].node == "node-a" and ledger[1].finished_at is None
    assert ledger[1].started_at == claimed.started_at


def test_claim_on_empty_store_returns_none(store: JobStore) -> None:
    assert store.claim("w", None, 30) is None
    assert store.running() == []


# -- leases ---------------------------------------------------------------------------


def test_renew_only_for_the_current_attempt(store: JobStore) -> None:
    job, _ = store.create(new_job())
    claimed = store.claim("w", None, 5)
    assert claimed is not None
    assert store.renew(job.id, 1, 60)
    renewed = store.get(job.id)
    assert renewed is not None
    assert 54.9 < _seconds(renewed.lease_expires_at, claimed.lease_expires_at) < 60
    stale = store.stale_writes
    assert not store.renew(job.id, 2, 60)  # not claimed yet
    assert not store.renew("no-such-job", 1, 60)
    assert store.stale_writes == stale + 2
    assert store.end_attempt(job.id, 1, code="x", message="m", retry=True) is Status.QUEUED
    assert not store.renew(job.id, 1, 60)  # queued: attempt 1 is over
    assert store.claim("w2", None, 60) is not None
    assert not store.renew(job.id, 1, 60)  # attempt 2 is current now
    assert store.renew(job.id, 2, 60)
    assert store.stale_writes == stale + 4


def test_renewed_lease_is_not_rescued(store: JobStore) -> None:
    job, _ = store.create(new_job())
    assert store.claim("w", None, EXPIRED) is not None
    assert store.renew(job.id, 1, 60)  # the slow-but-alive worker renewed in time
    assert store.rescue_expired() == []
    got = store.get(job.id)
    assert got is not None and got.status is Status.RUNNING and got.attempt == 1


def test_rescue_expired_only_touches_expired_leases(store: JobStore) -> None:
    expired, _ = store.create(new_job())
    live, _ = store.create(new_job())
    last, _ = store.create(new_job(max_attempts=1))
    queued, _ = store.create(new_job())
    assert store.claim("w1", None, EXPIRED) is not None
    assert store.claim("w2", None, 60) is not None
    assert store.claim("w3", None, EXPIRED) is not None
    rescued = store.rescue_expired()
    assert sorted(rescued) == sorted([(expired.id, 1, Status.QUEUED), (last.id, 1, Status.FAILED)])
    assert store.rescue_expired() == []  # nothing left to rescue

    requeued = store.get(expired.id)
    assert requeued is not None
    assert requeued.status is Status.QUEUED and requeued.attempt == 1
    assert requeued.error_code == "lease_expired"
    assert requeued.lease_owner is None and requeued.lease_expires_at is None
    assert [(a.attempt, a.outcome) for a in store.attempts(expired.id)] == [(1, Outcome.LOST)]

    out_of_attempts = store.get(last.id)
    assert out_of_attempts is not None
    assert out_of_attempts.status is Status.FAILED and out_of_attempts.error_code == "lease_expired"
    assert _aware(out_of_attempts.finished_at)
    assert [(a.attempt, a.outcome) for a in store.attempts(last.id)] == [(1, Outcome.FAILED)]

    alive = store.get(live.id)
    assert alive is not None and alive.status is Status.RUNNING and alive.lease_owner == "w2"
    untouched = store.get(queued.id)
    assert untouched is not None and untouched.status is Status.QUEUED and untouched.attempt == 0


def test_short_lease_expires_by_the_db_clock(store: JobStore) -> None:
    job, _ = store.create(new_job())
    claimed = store.claim("w", None, 0.05)
    assert claimed is not None
    # Wait on the store itself: the rescuer picks the job up once the DB clock passes.
    rescued = _wait_for(store.rescue_expired)
    assert rescued == [(job.id, 1, Status.QUEUED)]
    # It was not expired before its lease ran out.
    attempts = store.attempts(job.id)
    assert _seconds(attempts[0].finished_at, claimed.started_at) >= 0.05


# -- fenced transitions -----------------------------------------------------------------


def test_succeed_is_fenced_by_attempt(store: JobStore) -> None:
    job, _ = store.create(new_job())
    assert store.claim("w", None, 30) is not None
    stale = store.stale_writes
    assert not store.succeed(job.id, 2, {"edge.png": "x"}, {})  # a future attempt
    assert not store.succeed(job.id, 0, {"edge.png": "x"}, {})
    assert store.stale_writes == stale + 2
    artifacts = {"edge.png": "jobs/j/edge.png", "coloring_page.pdf": "jobs/j/coloring_page.pdf"}
    assert store.succeed(job.id, 1, artifacts, {"render": 1.5})
    done = store.get(job.id)
    assert done is not None
    assert done.status is Status.SUCCEEDED and done.attempt == 1
    assert done.artifacts == artifacts and done.timings == {"render": 1.5}
    assert done.lease_owner is None and done.lease_expires_at is None
    assert _aware(done.finished_at)
    # A second (duplicate) report of the same attempt is rejected and changes nothing.
    assert not store.succeed(job.id, 1, {"edge.png": "other"}, {})
    assert store.end_attempt(job.id, 1, code="x", message="late", retry=True) is None
    assert store.stale_writes == stale + 4
    assert store.get(job.id) == done
    assert [(a.attempt, a.outcome) for a in store.attempts(job.id)] == [(1, Outcome.SUCCEEDED)]


def test_succeed_many_writes_current_attempts_and_fences_each_on_its_own(
    store: JobStore,
) -> None:
    ids = seed_jobs(store, 3)
    jobs = store.claim_many("w", None, 30, 3)
    assert store.cancel(ids[1]) is not None  # the middle one is no longer current
    written = store.succeed_many(
        [
            Success(j.id, j.attempt, {"edge.png": f"jobs/{j.id}/edge.png"}, {"pdf": 0.5})
            for j in jobs
        ]
    )
    assert written == [True, False, True]
    assert store.stale_writes == 1
    for job_id in (ids[0], ids[2]):
        job = store.get(job_id)
        assert job is not None
        assert (job.status, job.artifacts, job.timings) == (
            Status.SUCCEEDED,
            {"edge.png": f"jobs/{job_id}/edge.png"},
            {"pdf": 0.5},
        )
        assert [a.outcome for a in store.attempts(job_id)] == [Outcome.SUCCEEDED]
    assert store.get(ids[1]).status is Status.CANCELLED  # type: ignore[union-attr]
    assert store.succeed_many([Success(ids[0], 1, {}, {})]) == [False]  # no second time
    assert store.overlapping_attempts() == 0


def test_end_attempt_retry_requeues_with_delay(store: JobStore) -> None:
    job, _ = store.create(new_job(max_attempts=3))
    assert store.claim("w", None, 30) is not None
    status = store.end_attempt(
        job.id, 1, code="transient", message="timeout", retry=True, delay=5, timings={"a": 1.0}
    )
    assert status is Status.QUEUED
    got = store.get(job.id)
    assert got is not None
    assert got.status is Status.QUEUED and got.attempt == 1
    assert got.error == "timeout" and got.error_code == "transient"
    assert got.timings == {"a": 1.0}
    assert got.finished_at is None
    assert got.lease_owner is None and got.lease_expires_at is None
    assert 4.9 < _seconds(got.run_after, got.updated_at) <= 5.01
    assert store.claim("w", None, 30) is None
    att = store.attempts(job.id)
    assert [(a.attempt, a.outcome, a.error) for a in att] == [(1, Outcome.RETRY, "timeout")]
    assert _aware(att[0].finished_at)


def test_end_attempt_fails_when_attempts_are_exhausted(store: JobStore) -> None:
    job, _ = store.create(new_job(max_attempts=2))
    outcomes = []
    for attempt in (1, 2):
        claimed = store.claim("w", None, 30)
        assert claimed is not None and claimed.attempt == attempt
        outcomes.append(
            store.end_attempt(job.id, attempt, code="transient", message=f"e{attempt}", retry=True)
        )
    assert outcomes == [Status.QUEUED, Status.FAILED]
    got = store.get(job.id)
    assert got is not None
    assert got.status is Status.FAILED and got.attempt == 2
    assert got.error == "e2" and got.error_code == "transient"
    assert _aware(got.finished_at)
    assert store.claim("w", None, 30) is None
    assert [(a.attempt, a.outcome) for a in store.attempts(job.id)] == [
        (1, Outcome.RETRY),
        (2, Outcome.FAILED),
    ]
    assert store.overlapping_attempts() == 0


def test_end_attempt_without_retry_fails_at_once(store: JobStore) -> None:
    job, _ = store.create(new_job(max_attempts=5))
    assert store.claim("w", None, 30) is not None
    status = store.end_attempt(job.id, 1, code="bad_input", message="not an image", retry=False)
    assert status is Status.FAILED
    got = store.get(job.id)
    assert got is not None
    assert got.status is Status.FAILED and got.attempt == 1
    assert got.error_code == "bad_input" and got.error == "not an image"
    assert got.to_public()["error"] == {"code": "bad_input", "message": "not an image"}
    assert [(a.attempt, a.outcome, a.error) for a in store.attempts(job.id)] == [
        (1, Outcome.FAILED, "not an image")
    ]
    stale = store.stale_writes
    assert store.end_attempt(job.id, 1, code="x", message="y", retry=True) is None
    assert store.stale_writes == stale + 1


def test_end_attempt_lost_records_lost(store: JobStore) -> None:
    job, _ = store.create(new_job())
    assert store.claim("w", None, 30) is not None
    status = store.end_attempt(job.id, 1, code="worker_died", message="gone", retry=True, lost=True)
    assert status is Status.QUEUED
    assert [(a.attempt, a.outcome) for a in store.attempts(job.id)] == [(1, Outcome.LOST)]


def test_require_expired_refuses_a_live_lease(store: JobStore) -> None:
    job, _ = store.create(new_job())
    assert store.claim("w", None, 60) is not None
    kwargs = {"code": "lease_expired", "message": "m", "retry": True, "require_expired": True}
    assert store.end_attempt(job.id, 1, **kwargs) is None  # type: ignore[arg-type]
    got = store.get(job.id)
    assert got is not None and got.status is Status.RUNNING


# -- cancel -----------------------------------------------------------------------------


def test_cancel_queued_job(store: JobStore) -> None:
    job, _ = store.create(new_job())
    cancelled = store.cancel(job.id)
    assert cancelled is not None
    assert cancelled.status is Status.CANCELLED and _aware(cancelled.finished_at)
    assert store.claim("w", None, 30) is None
    assert store.attempts(job.id) == []
    assert store.cancel("no-such-job") is None


def test_cancel_running_job_rejects_the_late_result(store: JobStore) -> None:
    job, _ = store.create(new_job())
    assert store.claim("w", None, 30) is not None
    cancelled = store.cancel(job.id)
    assert cancelled is not None
    assert cancelled.status is Status.CANCELLED and cancelled.attempt == 1
    assert cancelled.lease_owner is None and cancelled.lease_expires_at is None
    stale = store.stale_writes
    assert not store.succeed(job.id, 1, {"edge.png": "late"}, {})
    assert not store.renew(job.id, 1, 30)
    assert store.end_attempt(job.id, 1, code="x", message="late", retry=True) is None
    assert store.stale_writes == stale + 3
    got = store.get(job.id)
    assert got is not None and got.status is Status.CANCELLED and got.artifacts == {}
    assert [(a.attempt, a.outcome) for a in store.attempts(job.id)] == [(1, Outcome.CANCELLED)]


def test_cancel_after_a_retry_keeps_the_ledger(store: JobStore) -> None:
    job, _ = store.create(new_job())
    assert store.claim("w", None, 30) is not None
    assert store.end_attempt(job.id, 1, code="x", message="m", retry=True, delay=60) is (
        Status.QUEUED
    )
    cancelled = store.cancel(job.id)
    assert cancelled is not None and cancelled.status is Status.CANCELLED
    assert [(a.attempt, a.outcome) for a in store.attempts(job.id)] == [(1, Outcome.RETRY)]


@pytest.mark.parametrize("final", [Status.SUCCEEDED, Status.FAILED, Status.CANCELLED])
def test_cancel_of_a_final_job_returns_it_unchanged(store: JobStore, final: Status) -> None:
    job, _ = store.create(new_job())
    if final is Status.CANCELLED:
        assert store.cancel(job.id) is not None
    else:
        assert store.claim("w", None, 30) is not None
        if final is Status.SUCCEEDED:
            assert store.succeed(job.id, 1, {"edge.png": "k"}, {})
        else:
            assert store.end_attempt(job.id, 1, code="c", message="m", retry=False) is final
    before = store.get(job.id)
    assert before is not None and before.status is final
    assert store.cancel(job.id) == before
    assert store.get(job.id) == before


# -- views ------------------------------------------------------------------------------


def test_attempts_ledger_through_a_full_life(store: JobStore) -> None:
    job, _ = store.create(new_job(max_attempts=4))
    assert store.claim("w1", "n1", EXPIRED) is not None
    assert store.rescue_expired() == [(job.id, 1, Status.QUEUED)]
    assert store.claim("w2", "n2", 30) is not None
    assert store.end_attempt(job.id, 2, code="t", message="flaky", retry=True) is Status.QUEUED
    assert store.claim("w3", None, 30) is not None
    assert store.succeed(job.id, 3, {"edge.png": "k"}, {})
    ledger = store.attempts(job.id)
    assert [(a.attempt, a.worker, a.node, a.outcome) for a in ledger] == [
        (1, "w1", "n1", Outcome.LOST),
        (2, "w2", "n2", Outcome.RETRY),
        (3, "w3", None, Outcome.SUCCEEDED),
    ]
    assert ledger[1].error == "flaky"
    for a in ledger:
        assert _aware(a.started_at) and _aware(a.finished_at)
        assert a.finished_at is not None and a.started_at <= a.finished_at
    for earlier, later in itertools.pairwise(ledger):
        assert earlier.finished_at is not None and earlier.finished_at <= later.started_at
    assert store.overlapping_attempts() == 0


def test_overlapping_attempts_is_zero_after_fast_retries(store: JobStore) -> None:
    # Fail and immediately reclaim, many times, so attempts start in the same
    # clock tick their predecessor ended in.
    for _ in range(100):
        job_id = store.create(new_job())[0].id
        first = store.claim("w", None, 30)
        assert first is not None and first.id == job_id
        assert store.end_attempt(job_id, 1, code="t", message="m", retry=True) is Status.QUEUED
        second = store.claim("w", None, 30)
        assert second is not None and (second.id, second.attempt) == (job_id, 2)
        assert store.succeed(job_id, 2, {}, {})
    assert store.overlapping_attempts() == 0


def test_overlapping_attempts_detects_a_manufactured_overlap(
    store: JobStore, store_target: StoreTarget
) -> None:
    clean, _ = store.create(new_job())
    assert store.claim("w", None, 30) is not None
    assert store.succeed(clean.id, 1, {}, {})
    assert store.overlapping_attempts() == 0

    # Attempt 2 starts while attempt 1 is still open (never finished).
    open_job, _ = store.create(new_job())
    assert store.claim("w", None, 30) is not None
    store_target.execute(
        "INSERT INTO attempts (job_id, attempt, worker, started_at) "
        "SELECT job_id, 2, 'intruder', started_at FROM attempts "
        "WHERE job_id = :id AND attempt = 1",
        id=open_job.id,
    )
    assert store.overlapping_attempts() == 1

    # Attempt 2 starts before attempt 1 finished (both closed).
    closed_job, _ = store.create(new_job(max_attempts=3))
    assert store.claim("w", None, 30) is not None
    assert store.end_attempt(closed_job.id, 1, code="t", message="m", retry=True) is (Status.QUEUED)
    assert store.claim("w", None, 30) is not None
    assert store.succeed(closed_job.id, 2, {}, {})
    assert store.overlapping_attempts() == 1
    store_target.shift_attempt_start(closed_job.id, 2, -5.0)  # now it began 5 s too early
    assert store.overlapping_attempts() == 2


def test_counts(store: JobStore) -> None:
    empty = store.counts()
    assert empty == {
        "by_status": {s.value: 0 for s in Status},
        "queued_by_lane": {"interactive": 0, "batch": 0},
    }
    seed_jobs(store, 3, lane=Lane.INTERACTIVE)
    seed_jobs(store, 2, lane=Lane.BATCH)
    running = store.claim("w", None, 30)  # interactive first
    succeeded = store.claim("w", None, 30)
    assert running is not None and succeeded is not None
    assert store.succeed(succeeded.id, 1, {}, {})
    cancelled = store.claim("w", None, 30)
    assert cancelled is not None and store.cancel(cancelled.id) is not None
    failed = store.claim("w", None, 30)  # the first batch job
    assert failed is not None and failed.lane is Lane.BATCH
    assert store.end_attempt(failed.id, 1, code="c", message="m", retry=False) is Status.FAILED
    assert store.counts() == {
        "by_status": {
            "queued": 1,
            "running": 1,
            "succeeded": 1,
            "failed": 1,
            "cancelled": 1,
        },
        "queued_by_lane": {"interactive": 0, "batch": 1},
    }


def test_list_jobs_filters(store: JobStore, store_target: StoreTarget) -> None:
    alice = seed_jobs(store, 4, owner="alice")
    bob = seed_jobs(store, 2, owner="bob")
    # alice[0] is claimed first (FIFO) and succeeds.
    first = store.claim("w", None, 30)
    assert first is not None and first.id == alice[0]
    assert store.succeed(alice[0], 1, {}, {})

    def ids(jobs: list[Job]) -> list[str]:
        return [j.id for j in jobs]

    # Newest first, even for jobs created within one tick of the clock.
    newest_first = list(reversed(alice + bob))
    assert ids(store.list_jobs()) == newest_first
    assert ids(store.list_jobs(owner="alice")) == list(reversed(alice))
    assert ids(store.list_jobs(owner="bob")) == list(reversed(bob))
    assert store.list_jobs(owner="carol") == []
    assert ids(store.list_jobs(status=Status.SUCCEEDED)) == [alice[0]]
    assert ids(store.list_jobs(owner="bob", status=Status.SUCCEEDED)) == []
    assert ids(store.list_jobs(owner="alice", status=Status.QUEUED)) == list(reversed(alice[1:]))
    assert ids(store.list_jobs(limit=3)) == [*reversed(bob), alice[3]]
    assert ids(store.list_jobs(owner="alice", limit=1)) == [alice[3]]

    # `before` is a timestamp cursor: give the jobs distinct, known creation times.
    for age, job_id in enumerate(newest_first, start=1):
        store_target.backdate(job_id, 10.0 * age)
    assert ids(store.list_jobs()) == newest_first
    pivot = store.get(alice[2])
    assert pivot is not None
    assert ids(store.list_jobs(before=pivot.created_at)) == [alice[1], alice[0]]
    assert ids(store.list_jobs(owner="alice", before=pivot.created_at, limit=1)) == [alice[1]]
    assert ids(store.list_jobs(owner="bob", before=pivot.created_at)) == []
    assert ids(store.list_jobs(status=Status.QUEUED, before=pivot.created_at)) == [alice[1]]
    assert len(store.list_jobs(before=pivot.created_at + timedelta(days=1), limit=100)) == 6
    # Paging with `before` walks the whole list without gaps or repeats.
    seen: list[str] = []
    page = store.list_jobs(limit=4)
    for _ in range(len(newest_first)):  # bounded: a cursor that repeats must not hang
        if not page:
            break
        seen += ids(page)
        page = store.list_jobs(limit=4, before=page[-1].created_at)
    assert seen == newest_first
    assert page == []


def test_batch_lane_waits_for_interactive_and_is_fair_across_owners(
    store_target: StoreTarget,
) -> None:
    store = store_target.open()
    ordered = [
        ("a", Lane.BATCH),
        ("a", Lane.BATCH),
        ("a", Lane.BATCH),
        ("b", Lane.BATCH),
        ("c", Lane.INTERACTIVE),
    ]
    ids = [store.create(new_job(owner=o, lane=lane))[0].id for o, lane in ordered]
    shift = (
        "UPDATE jobs SET run_after = run_after - :s WHERE id = :id"
        if store_target.sqlite_path
        else "UPDATE jobs SET run_after = run_after - make_interval(secs => :s) WHERE id = :id"
    )
    for age, job_id in enumerate(reversed(ids), start=1):  # distinct ages: first is oldest
        store_target.execute(shift, s=float(age), id=job_id)
    claimed = []
    while (job := store.claim("w", None, 30.0)) is not None:
        claimed.append(job.id)
    # The interactive job although newest; then owner b's one job gets its turn
    # while owner a already has one running, before a's older backlog.
    assert claimed == [ids[4], ids[0], ids[3], ids[1], ids[2]]
    # Claimed together in one call, the same order: the batch lane's fairness counts
    # the jobs claimed earlier in the same transaction.
    for job_id in ids:
        store_target.execute("UPDATE jobs SET status = 'queued' WHERE id = :id", id=job_id)
    assert [j.id for j in store.claim_many("w", None, 30.0, 5)] == claimed
