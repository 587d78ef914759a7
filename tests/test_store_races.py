"""Races against the job store: real threads and processes, on SQLite and PostgreSQL.

Every claimer, owner and rescuer below uses its own store instance (its own
connections), so the database, not a Python lock, decides who wins.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest

from scribble_ray.jobs import Outcome, Status
from scribble_ray.store import JobStore, open_store
from tests import store_fixtures
from tests.store_fixtures import EXPIRED, StoreTarget, new_job, seed_jobs

# The fixtures, bound here explicitly (tests/conftest.py belongs to the service tests).
store_target = store_fixtures.store_target

T = TypeVar("T")
Claim = tuple[str, int, str, bool]  # job id, attempt, claimer, did its succeed() win

N_JOBS = 2000
N_CLAIMERS = 16
BARRIER_TIMEOUT = 60.0


def _artifacts(job_id: str, attempt: int, worker: str) -> dict[str, str]:
    return {"edge.png": f"jobs/{job_id}/edge.png", "by": f"{worker}#{attempt}"}


def drain(store: JobStore, worker: str, start: Any, per_claim: int = 1) -> list[Claim]:
    """Wait for the start signal, then claim (`per_claim` at a time) and complete jobs
    until none is left."""
    start.wait(timeout=BARRIER_TIMEOUT)
    done: list[Claim] = []
    while jobs := store.claim_many(worker, None, 60, per_claim):
        for job in jobs:
            ok = store.succeed(job.id, job.attempt, _artifacts(job.id, job.attempt, worker), {})
            done.append((job.id, job.attempt, worker, ok))
    return done


def _drain_in_process(url: str, index: int, start: Any, results: Any) -> None:
    """A claimer process: its own store from the URL; reports what it claimed."""
    try:
        store = open_store(url, migrate=False)
        try:
            results.put((index, drain(store, f"proc-{index}", start), None))
        finally:
            store.close()
    except BaseException:
        start.abort()  # release the others at once instead of at the barrier timeout
        results.put((index, [], traceback.format_exc()))


def _together(fns: list[Callable[[], T]]) -> list[T]:
    """Run the callables on their own threads, released at once by a barrier."""
    barrier = threading.Barrier(len(fns))

    def go(fn: Callable[[], T]) -> T:
        barrier.wait(timeout=BARRIER_TIMEOUT)
        return fn()

    with ThreadPoolExecutor(len(fns)) as pool:
        futures = [pool.submit(go, fn) for fn in fns]
        return [f.result(timeout=120) for f in futures]


def _check_drained(
    store: JobStore, target: StoreTarget, ids: list[str], per_claimer: list[list[Claim]]
) -> None:
    claims = [c for batch in per_claimer for c in batch]
    claimed_ids = Counter(job_id for job_id, _, _, _ in claims)
    doubles = {job_id: n for job_id, n in claimed_ids.items() if n > 1}
    assert not doubles, f"{len(doubles)} jobs claimed more than once, e.g. {list(doubles)[:3]}"
    assert len(claims) == len(ids) == N_JOBS
    assert set(claimed_ids) == set(ids)
    assert {attempt for _, attempt, _, _ in claims} == {1}
    assert all(ok for *_, ok in claims), "a claimer's succeed() was refused"
    busy = sum(1 for batch in per_claimer if batch)
    assert busy >= 2, f"only {busy} claimer(s) got work: the race did not happen"

    assert store.counts()["by_status"] == {
        "queued": 0,
        "running": 0,
        "succeeded": N_JOBS,
        "failed": 0,
        "cancelled": 0,
    }
    jobs = {j.id: j for j in store.list_jobs(status=Status.SUCCEEDED, limit=N_JOBS + 1)}
    assert len(jobs) == N_JOBS
    for job_id, attempt, worker, _ in claims:  # each job carries its one claimer's result
        assert jobs[job_id].attempt == 1
        assert jobs[job_id].artifacts == _artifacts(job_id, attempt, worker)
    assert target.execute(
        "SELECT count(*), count(DISTINCT job_id), max(attempt), min(outcome), max(outcome) "
        "FROM attempts"
    ) == [(N_JOBS, N_JOBS, 1, "succeeded", "succeeded")]
    assert store.overlapping_attempts() == 0


# -- a. many claimers drain one queue ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("per_claim", [1, 7])
def test_16_threads_with_own_stores_claim_each_job_once(
    store_target: StoreTarget, per_claim: int
) -> None:
    seeder = store_target.open()
    ids = seed_jobs(seeder, N_JOBS)
    stores = [store_target.open(migrate=False) for _ in range(N_CLAIMERS)]
    start = threading.Barrier(N_CLAIMERS)
    with ThreadPoolExecutor(N_CLAIMERS) as pool:
        futures = [
            pool.submit(drain, stores[i], f"thread-{i}", start, per_claim)
            for i in range(N_CLAIMERS)
        ]
        per_claimer = [f.result(timeout=120) for f in futures]
    _check_drained(seeder, store_target, ids, per_claimer)
    assert sum(s.stale_writes for s in stores) == 0


@pytest.mark.slow
def test_16_processes_claim_each_job_once(store_target: StoreTarget) -> None:
    seeder = store_target.open()
    ids = seed_jobs(seeder, N_JOBS)
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(N_CLAIMERS)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_drain_in_process, args=(store_target.url, i, start, results))
        for i in range(N_CLAIMERS)
    ]
    for p in procs:
        p.start()
    try:
        reports = [results.get(timeout=180) for _ in procs]
    except queue.Empty:
        pytest.fail("a claimer process never reported")
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    errors = [err for _, _, err in reports if err]
    assert not errors, errors[0]
    assert [p.exitcode for p in procs] == [0] * N_CLAIMERS
    _check_drained(seeder, store_target, ids, [claims for _, claims, _ in reports])


# -- b. a stale attempt reports after the next attempt was claimed -------------------------


def _requeue_as_lost(store: JobStore, job_id: str) -> None:
    """Claim attempt 1 with a lease that has already run out, and rescue it."""
    claimed = store.claim("zombie", None, EXPIRED)
    assert claimed is not None and (claimed.id, claimed.attempt) == (job_id, 1)
    assert store.rescue_expired() == [(job_id, 1, Status.QUEUED)]


def test_stale_attempt_success_after_next_claim_is_rejected(store_target: StoreTarget) -> None:
    current, zombie = store_target.open(), store_target.open(migrate=False)
    job, _ = current.create(new_job())
    _requeue_as_lost(current, job.id)
    second = current.claim("worker-2", None, 60)
    assert second is not None and (second.id, second.attempt) == (job.id, 2)

    # Attempt 1 wakes up and reports: success, a heartbeat, then a failure.
    assert not zombie.succeed(job.id, 1, _artifacts(job.id, 1, "zombie"), {"total": 1.0})
    assert not zombie.renew(job.id, 1, 60)
    assert zombie.end_attempt(job.id, 1, code="x", message="late", retry=False) is None
    assert zombie.stale_writes == 3
    running = current.get(job.id)
    assert running is not None
    assert running.status is Status.RUNNING and running.attempt == 2
    assert running.lease_owner == "worker-2" and running.artifacts == {}

    assert current.succeed(job.id, 2, _artifacts(job.id, 2, "worker-2"), {"total": 2.0})
    done = current.get(job.id)
    assert done is not None
    assert done.status is Status.SUCCEEDED and done.attempt == 2
    assert done.artifacts == _artifacts(job.id, 2, "worker-2")
    assert done.timings == {"total": 2.0}
    assert [(a.attempt, a.worker, a.outcome) for a in current.attempts(job.id)] == [
        (1, "zombie", Outcome.LOST),
        (2, "worker-2", Outcome.SUCCEEDED),
    ]
    assert current.overlapping_attempts() == 0


def test_zombie_writes_race_the_current_attempt(store_target: StoreTarget) -> None:
    """Attempt 1's late writes and attempt 2's success arrive at the same moment."""
    current, zombie = store_target.open(), store_target.open(migrate=False)
    rounds = 100
    for r in range(rounds):
        job, _ = current.create(new_job())
        _requeue_as_lost(current, job.id)
        second = current.claim("worker-2", None, 60)
        assert second is not None and (second.id, second.attempt) == (job.id, 2)

        def zombie_writes(job_id: str = job.id) -> tuple[bool, Status | None, bool]:
            return (
                zombie.succeed(job_id, 1, _artifacts(job_id, 1, "zombie"), {}),
                zombie.end_attempt(job_id, 1, code="x", message="late", retry=False),
                zombie.renew(job_id, 1, 60),
            )

        def current_writes(job_id: str = job.id) -> bool:
            return current.succeed(job_id, 2, _artifacts(job_id, 2, "worker-2"), {})

        # Alternate who is released first within the barrier's wake-up.
        fns: list[Callable[[], Any]] = [zombie_writes, current_writes]
        results = _together(fns if r % 2 else fns[::-1])
        z, c = (results[0], results[1]) if r % 2 else (results[1], results[0])
        assert z == (False, None, False)
        assert c is True
        done = current.get(job.id)
        assert done is not None
        assert (done.status, done.attempt, done.error) == (Status.SUCCEEDED, 2, None)
        assert done.artifacts == _artifacts(job.id, 2, "worker-2")
    assert zombie.stale_writes == 3 * rounds
    assert current.overlapping_attempts() == 0


# -- c. the rescuer and the owner's completion race -----------------------------------------


def test_rescue_races_owner_completion(
    store_target: StoreTarget, capsys: pytest.CaptureFixture[str]
) -> None:
    claimer = store_target.open()
    owner, rescuer = store_target.open(migrate=False), store_target.open(migrate=False)
    rounds = 200
    owner_won = rescuer_won = 0
    for r in range(rounds):
        job, _ = claimer.create(new_job())
        claimed = claimer.claim("owner", None, EXPIRED)  # the lease ran out; work is done
        assert claimed is not None and (claimed.id, claimed.attempt) == (job.id, 1)
        owner_stale = owner.stale_writes

        # Vary the interleaving without sleeping: one side first makes 0-2 extra
        # round trips to the database.
        def finish(job_id: str = job.id, extra: int = r % 3) -> bool:
            for _ in range(extra):
                owner.get(job_id)
            return owner.succeed(job_id, 1, _artifacts(job_id, 1, "owner"), {})

        def rescue(job_id: str = job.id, extra: int = (r // 3) % 2) -> list[Any]:
            for _ in range(extra):
                rescuer.get(job_id)
            return rescuer.rescue_expired()

        succeeded, rescued = _together([finish, rescue])
        assert rescued in ([], [(job.id, 1, Status.QUEUED)])
        assert succeeded != bool(rescued), f"round {r}: succeeded={succeeded} rescued={rescued}"
        after = claimer.get(job.id)
        assert after is not None and after.attempt == 1
        outcomes = [(a.attempt, a.outcome) for a in claimer.attempts(job.id)]
        if succeeded:
            owner_won += 1
            assert after.status is Status.SUCCEEDED
            assert after.artifacts == _artifacts(job.id, 1, "owner")
            assert outcomes == [(1, Outcome.SUCCEEDED)]
            assert owner.stale_writes == owner_stale
            # A succeeded job never goes back to the queue.
            assert rescuer.rescue_expired() == []
            final = claimer.get(job.id)
            assert final is not None and final.status is Status.SUCCEEDED
        else:
            rescuer_won += 1
            assert after.status is Status.QUEUED and after.error_code == "lease_expired"
            assert after.artifacts == {} and after.lease_owner is None
            assert outcomes == [(1, Outcome.LOST)]
            assert owner.stale_writes == owner_stale + 1
            cancelled = claimer.cancel(job.id)  # keep the queue empty for the next round
            assert cancelled is not None and cancelled.status is Status.CANCELLED
    assert owner_won + rescuer_won == rounds
    counts = claimer.counts()["by_status"]
    assert (counts["succeeded"], counts["cancelled"]) == (owner_won, rescuer_won)
    assert claimer.overlapping_attempts() == 0
    with capsys.disabled():
        print(
            f"\n[{store_target.backend}] rescue vs completion over {rounds} rounds: "
            f"owner won {owner_won}, rescuer won {rescuer_won}"
        )
    assert owner_won > 0 and rescuer_won > 0, "one side never won: the race was not exercised"


# -- d. two coordinators on one database ------------------------------------------------------


def _plan(job_id: str) -> int:
    """What a job's first attempt does: 0 stalls past its lease, 1 fails, 2 succeeds."""
    return int(job_id[:8], 16) % 3


def test_two_coordinators_never_double_claim(store_target: StoreTarget) -> None:
    n_jobs, workers_per_coordinator = 600, 3
    coordinators = [store_target.open(), store_target.open()]
    ids = seed_jobs(coordinators[0], n_jobs, max_attempts=3)
    lock = threading.Lock()
    claims: list[tuple[str, int, str]] = []
    wins: list[tuple[str, int, str]] = []
    rescued: list[tuple[str, int, Status]] = []
    stop = threading.Event()

    def all_final(store: JobStore) -> bool:
        by_status = store.counts()["by_status"]
        return by_status["queued"] == 0 and by_status["running"] == 0

    def worker(store: JobStore, name: str) -> None:
        while True:
            job = store.claim(name, None, 60)
            if job is None:
                if all_final(store):
                    return
                continue
            with lock:
                claims.append((job.id, job.attempt, name))
            first, plan = job.attempt == 1, _plan(job.id)
            if first and plan == 1:
                status = store.end_attempt(job.id, 1, code="transient", message="m", retry=True)
                assert status is Status.QUEUED
                continue
            if first and plan == 0:
                assert store.renew(job.id, 1, EXPIRED)  # stalled: its lease runs out now
            if store.succeed(job.id, job.attempt, _artifacts(job.id, job.attempt, name), {}):
                with lock:
                    wins.append((job.id, job.attempt, name))

    def rescuer(store: JobStore) -> None:
        while not stop.is_set():
            found = store.rescue_expired()
            with lock:
                rescued.extend(found)

    with ThreadPoolExecutor(2 * workers_per_coordinator + 2) as pool:
        rescuers = [pool.submit(rescuer, c) for c in coordinators]
        fns = [
            (lambda c=c, name=f"coord{i}-w{w}": worker(c, name))
            for i, c in enumerate(coordinators)
            for w in range(workers_per_coordinator)
        ]
        try:
            _together(fns)
        finally:
            stop.set()
            for f in rescuers:
                f.result(timeout=60)

    # No (job, attempt) was ever handed out twice, across both coordinators.
    pair_counts = Counter((job_id, attempt) for job_id, attempt, _ in claims)
    assert max(pair_counts.values()) == 1
    by_job: dict[str, list[int]] = defaultdict(list)
    for job_id, attempt, _ in claims:
        by_job[job_id].append(attempt)
    assert set(by_job) == set(ids)
    for job_id, attempts in by_job.items():
        assert sorted(attempts) == list(range(1, len(attempts) + 1)), job_id
    coordinators_used = {name.split("-")[0] for _, _, name in claims}
    assert coordinators_used == {"coord0", "coord1"}

    # Exactly one attempt of each job won, and the job shows that attempt's result.
    assert sorted(job_id for job_id, _, _ in wins) == sorted(ids)
    final = {j.id: j for j in coordinators[0].list_jobs(limit=n_jobs + 1)}
    rescued_ids = {job_id for job_id, _, _ in rescued}
    assert len(rescued) == len(rescued_ids)  # a lease is rescued at most once
    for job_id, attempt, name in wins:
        job = final[job_id]
        assert (job.status, job.attempt) == (Status.SUCCEEDED, attempt)
        assert job.artifacts == _artifacts(job_id, attempt, name)
        outcomes = [a.outcome for a in coordinators[0].attempts(job_id)]
        plan = _plan(job_id)
        if plan == 1:
            expected = [Outcome.RETRY, Outcome.SUCCEEDED]
        elif plan == 0 and job_id in rescued_ids:
            expected = [Outcome.LOST, Outcome.SUCCEEDED]
        else:
            expected = [Outcome.SUCCEEDED]
        assert outcomes == expected, (job_id, plan, outcomes)
    assert all(_plan(job_id) == 0 for job_id in rescued_ids)
    assert coordinators[0].overlapping_attempts() == 0
    lost_races = sum(c.stale_writes for c in coordinators)
    assert lost_races >= len(rescued_ids)  # every rescued stall had its late succeed refused
