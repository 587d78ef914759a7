"""The pipeline pool grows with the queue and shrinks back when idle."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.conftest import Service, start_service, stop_service
from tests.test_exactly_once import ledger, submit


def pool_size(svc: Service) -> int:
    return int(svc.http.get("/stats").json()["pool"]["size"])


def test_pool_grows_under_load_and_shrinks_to_pool_min_when_idle(
    serve_url: str, tmp_path: Path
) -> None:
    svc = start_service(
        serve_url,
        tmp_path,
        renderer="tests.fakes:scripted",
        pool_min=1,
        pool_max=3,
        pool_idle_seconds=0.5,
        fallback_poll_seconds=0.5,  # how soon an idle coordinator looks again
    )
    try:
        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(lambda _: submit(svc, "sleep:1.5"), range(8)))
            jobs = list(pool.map(svc.wait_final, ids))
        assert all(j["status"] == "succeeded" and j["attempt"] == 1 for j in jobs)
        workers = {ledger(svc, i)[0]["worker"] for i in ids}
        assert len(workers) >= 2, "the pool never grew"

        deadline = time.monotonic() + 60
        while (size := pool_size(svc)) > 1 and time.monotonic() < deadline:
            time.sleep(0.1)  # polling the condition (no event tells of a shrink)
        assert size == 1, f"the idle pool stayed at {size}"
        # What is left still works.
        assert svc.wait_final(submit(svc, "after"))["status"] == "succeeded"
    finally:
        stop_service(svc)
