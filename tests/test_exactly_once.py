"""Exactly once through the whole system: workers and coordinators die, jobs do not."""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray
from PIL import Image

from scribble_ray.coordinator import get_or_create_coordinator
from scribble_ray.jobs import JobOptions, Kind, NewJob
from scribble_ray.settings import Settings
from scribble_ray.store import JobStore, open_store
from tests.conftest import Service, pg_schema, start_service, stop_service

SCRIPTED = "tests.fakes:scripted"
FAST_RETRY = {"renderer": SCRIPTED, "lease_seconds": 2.0, "max_attempts": 3}


def tiny_png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)).save(
        buf, "PNG"
    )
    return buf.getvalue()


PNG = tiny_png()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each system-level race runs on both stores."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
    else:
        with pg_schema() as url:
            yield url


@pytest.fixture
def scripted(serve_url: str, tmp_path: Path, store_url: str) -> Iterator[Service]:
    svc = start_service(
        serve_url, tmp_path, store_url=store_url, pool_min=2, pool_max=4, **FAST_RETRY
    )
    yield svc
    stop_service(svc)


def submit(svc: Service, title: str) -> str:
    resp = svc.http.post("/jobs", files={"image": ("t.png", PNG)}, data={"title": title})
    assert resp.status_code == 202, resp.text
    return str(resp.json()["id"])


def wait_running(svc: Service, job_id: str) -> dict[str, Any]:
    job = svc.http.get(f"/jobs/{job_id}", params={"wait": 30, "seen": "queued"}).json()
    assert job["status"] == "running", job
    return job


def ledger(svc: Service, job_id: str) -> list[dict[str, Any]]:
    return list(svc.http.get(f"/jobs/{job_id}/attempts").json()["attempts"])


def assert_no_overlap(attempts: list[dict[str, Any]]) -> None:
    for earlier, later in itertools.pairwise(attempts):
        assert earlier["finished_at"] is not None
        assert datetime.fromisoformat(earlier["finished_at"]) <= datetime.fromisoformat(
            later["started_at"]
        )


def store_of(svc: Service) -> JobStore:
    return open_store(svc.store_url, migrate=False)


def test_worker_killed_mid_job_is_retried_once(scripted: Service) -> None:
    job_id = submit(scripted, "sleep:3")
    wait_running(scripted, job_id)
    [first] = ledger(scripted, job_id)
    ray.kill(ray.get_actor(first["worker"], namespace=scripted.namespace), no_restart=True)

    job = scripted.wait_final(job_id)
    assert job["status"] == "succeeded", (job, ledger(scripted, job_id))
    assert job["attempt"] == 2, ledger(scripted, job_id)
    attempts = ledger(scripted, job_id)
    assert [a["outcome"] for a in attempts] == ["lost", "succeeded"]
    assert "died" in attempts[0]["error"]
    assert attempts[0]["worker"] != attempts[1]["worker"]
    assert_no_overlap(attempts)


def test_job_that_kills_its_worker_every_time_fails_after_max_attempts(
    scripted: Service,
) -> None:
    job = scripted.wait_final(submit(scripted, "crash"))
    assert job["status"] == "failed"
    assert job["attempt"] == 3
    # Ray reports the death (worker_died) unless the lease ran out first (lease_expired).
    assert job["error"]["code"] in {"worker_died", "lease_expired"}
    assert job["error"]["message"]
    attempts = ledger(scripted, job["id"])
    assert [a["outcome"] for a in attempts] == ["lost", "lost", "failed"]
    assert_no_overlap(attempts)
    # The pool replaced the dead workers and still works.
    assert scripted.wait_final(submit(scripted, "fine"))["status"] == "succeeded"


def test_cancelled_running_job_keeps_its_state_against_the_late_result(
    scripted: Service,
) -> None:
    job_id = submit(scripted, "sleep:2")
    wait_running(scripted, job_id)
    cancelled = scripted.http.post(f"/jobs/{job_id}/cancel").json()
    assert cancelled["status"] == "cancelled"
    # The attempt ends on its own; its lease renewal or its result is fenced off.
    coordinator = scripted.coordinator()
    while any(w["job"] == job_id for w in ray.get(coordinator.workers.remote())):
        ray.get(coordinator.wait.remote(job_id, None, 0.5))
    job = scripted.http.get(f"/jobs/{job_id}").json()
    assert job["status"] == "cancelled"
    assert job["artifacts"] == {}
    assert [a["outcome"] for a in ledger(scripted, job_id)] == ["cancelled"]


def test_coordinator_killed_with_200_jobs_in_flight(scripted: Service) -> None:
    with ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(lambda _: submit(scripted, "sleep:0.05"), range(200)))
    stats = scripted.http.get("/stats").json()
    assert stats["by_status"]["queued"] + stats["by_status"]["running"] > 0
    ray.kill(scripted.coordinator(), no_restart=False)  # Ray restarts it

    with ThreadPoolExecutor(16) as pool:
        jobs = list(pool.map(scripted.wait_final, ids))
    assert [j["status"] for j in jobs] == ["succeeded"] * 200
    store = store_of(scripted)
    assert store.overlapping_attempts() == 0
    assert store.counts()["by_status"]["succeeded"] == 200
    assert scripted.http.get("/stats").json()["epoch"] != stats["epoch"]


def test_second_coordinator_on_the_same_database_claims_nothing_twice(
    scripted: Service,
) -> None:
    second_ns = scripted.namespace + "-twin"
    twin_settings = Settings.resolve(
        {
            "data_dir": str(scripted.data_dir),
            "store_url": scripted.store_url,
            "namespace": second_ns,
            "pool_min": 2,
            "pool_max": 2,
            # On SQLite (no LISTEN) the twin only sees jobs when it polls: poll often,
            # so it races the first coordinator for the backlog all along.
            "fallback_poll_seconds": 0.05,
            **FAST_RETRY,
        }
    )
    twin = get_or_create_coordinator(twin_settings)
    try:
        ray.get(twin.ping.remote())
        with ThreadPoolExecutor(16) as pool:
            # Slower work than submissions arrive: a backlog both can claim from.
            ids = list(pool.map(lambda _: submit(scripted, "sleep:0.1"), range(300)))
            jobs = list(pool.map(scripted.wait_final, ids))
    finally:
        ray.kill(twin, no_restart=True)
    assert all(j["status"] == "succeeded" and j["attempt"] == 1 for j in jobs)
    store = store_of(scripted)
    assert store.overlapping_attempts() == 0
    workers = {store.attempts(i)[0].worker.split("@")[1] for i in ids}
    assert len(workers) == 2, "both coordinators must have claimed jobs"


def test_incident_scenario_over_http(serve_url: str, tmp_path: Path, store_url: str) -> None:
    """8 ingress replicas, 4 pipeline workers, 1,000 jobs submitted at once."""
    svc = start_service(
        serve_url,
        tmp_path,
        store_url=store_url,
        ingress_replicas=8,
        pool_min=4,
        pool_max=4,
        pipeline_num_cpus=0.25,
        **FAST_RETRY,
    )
    try:
        with ThreadPoolExecutor(32) as pool:
            ids = list(pool.map(lambda _: submit(svc, "fast"), range(1000)))
            jobs = list(pool.map(svc.wait_final, ids))
        assert len(set(ids)) == 1000
        assert all(j["status"] == "succeeded" and j["attempt"] == 1 for j in jobs)
        store = store_of(svc)
        assert store.overlapping_attempts() == 0
        assert store.counts()["by_status"] == {
            "queued": 0,
            "running": 0,
            "succeeded": 1000,
            "failed": 0,
            "cancelled": 0,
        }
    finally:
        stop_service(svc)


def test_worker_killed_mid_batch_requeues_only_what_it_had_not_finished(
    serve_url: str, tmp_path: Path, store_url: str
) -> None:
    """jobs_per_call=4: one claim hands four jobs to the one worker; it dies in the
    second. The first keeps its one successful attempt; the other three run again."""
    svc = start_service(
        serve_url,
        tmp_path,
        store_url=store_url,
        pool_min=1,
        pool_max=1,
        jobs_per_call=4,
        **FAST_RETRY,
    )
    try:
        occupier = submit(svc, "sleep:2")  # holds the one worker while the batch is queued
        wait_running(svc, occupier)
        store = store_of(svc)  # straight into the store: four inserts in a few ms
        titles = ["first", "sleep:5", "third", "fourth"]
        ids = [
            store.create(NewJob(kind=Kind.TEXT, options=JobOptions(title=t), prompt=t))[0].id
            for t in titles
        ]
        [occupied] = ledger(svc, occupier)
        worker = ray.get_actor(occupied["worker"], namespace=svc.namespace)
        while (ray.get(worker.info.remote())["current"] or [None])[0] != ids[1]:
            pass  # a round trip per check: the worker is working through the batch
        ray.kill(worker, no_restart=True)

        jobs = [svc.wait_final(i) for i in ids]
        assert [j["status"] for j in jobs] == ["succeeded"] * 4
        ledgers = [ledger(svc, i) for i in ids]
        assert [a["outcome"] for a in ledgers[0]] == ["succeeded"]
        assert [[a["outcome"] for a in led] for led in ledgers[1:]] == [["lost", "succeeded"]] * 3
        assert {led[0]["worker"] for led in ledgers} == {occupied["worker"]}  # one claim
        for led in ledgers:
            assert_no_overlap(led)
        stats = svc.http.get("/stats").json()
        assert stats["stale_writes_rejected"] == 0  # the finished one was left alone
        assert store.overlapping_attempts() == 0
    finally:
        stop_service(svc)
