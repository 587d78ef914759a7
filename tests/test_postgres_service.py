"""The service on PostgreSQL: LISTEN/NOTIFY wakes the coordinator; killed backends lose nothing."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from scribble_ray.store import open_store
from tests.conftest import POSTGRES_URL, Service, pg_schema, start_service, stop_service
from tests.test_exactly_once import FAST_RETRY, submit

# Far above every wait below: a job that starts in time was woken by NOTIFY, not the poll.
SLOW_FALLBACK_POLL = 120.0


@pytest.fixture
def pg_service(serve_url: str, tmp_path: Path) -> Iterator[Service]:
    with pg_schema() as url:
        svc = start_service(
            serve_url,
            tmp_path,
            store_url=url,
            pool_min=2,
            pool_max=2,
            fallback_poll_seconds=SLOW_FALLBACK_POLL,
            **FAST_RETRY,
        )
        yield svc
        stop_service(svc)


def insert_like_the_old_front_end(svc: Service) -> str:
    """A job written straight into the table by another service, not through the API."""
    job_id = str(uuid.uuid4())
    with psycopg.connect(svc.store_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO jobs (id, kind, options) VALUES (%s, 'text', %s)",
            (job_id, json.dumps({"title": "external"})),
        )
    return job_id


def assert_started_without_polling(svc: Service, job_id: str) -> None:
    job = svc.http.get(f"/jobs/{job_id}", params={"wait": 20, "seen": "queued"}).json()
    assert job["status"] in {"running", "succeeded"}, "NOTIFY did not wake the coordinator"
    assert svc.wait_final(job_id)["status"] == "succeeded"


def terminate_backends(svc: Service) -> int:
    """pg_terminate_backend on every connection of this service (its application_name)."""
    app_name = svc.store_url.split("application_name=")[1].split("&")[0]
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s AND pid <> pg_backend_pid()",
            (app_name,),
        ).fetchall()
    return len(rows)


def test_job_inserted_by_another_service_wakes_the_coordinator(pg_service: Service) -> None:
    assert_started_without_polling(pg_service, insert_like_the_old_front_end(pg_service))


def test_backends_terminated_mid_run_lose_no_job(pg_service: Service) -> None:
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda _: submit(pg_service, "sleep:0.05"), range(60)))
        killed = [terminate_backends(pg_service)]
        for job_id in ids[::20]:  # kill again while the run goes on
            pg_service.http.get(f"/jobs/{job_id}", params={"wait": 10, "seen": "queued"})
            killed.append(terminate_backends(pg_service))
        jobs = list(pool.map(pg_service.wait_final, ids))
    assert sum(killed) > 0, "the test must really have cut connections"
    assert [j["status"] for j in jobs] == ["succeeded"] * 60
    store = open_store(pg_service.store_url, migrate=False)
    try:
        assert store.overlapping_attempts() == 0
    finally:
        store.close()
    # LISTEN was re-issued on a new connection: external inserts still wake us.
    assert_started_without_polling(pg_service, insert_like_the_old_front_end(pg_service))
