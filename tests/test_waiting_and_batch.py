"""Waiting without polling (long-poll, SSE, one request), batch lane and lineage."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import pytest

from scribble_ray.client import Client
from scribble_ray.store import open_store
from tests.conftest import Service, start_service, stop_service
from tests.test_exactly_once import FAST_RETRY, PNG, submit, wait_running


@pytest.fixture(scope="module")
def svc(serve_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    service = start_service(
        serve_url, tmp_path_factory.mktemp("wait"), pool_min=2, pool_max=2, **FAST_RETRY
    )
    yield service
    stop_service(service)


def sse(svc: Service, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    """Read a whole SSE stream; returns (event, data) pairs once the server closes it."""
    events, name = [], ""
    with svc.http.stream("GET", f"/jobs/{job_id}/events", timeout=60) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, json.loads(line.removeprefix("data: "))))
    return events


def requests_counted(svc: Service) -> dict[str, int]:
    counts = svc.http.get("/stats").json()["ingress"]["replica_requests"]
    return {k: v for k, v in counts.items() if k != "GET /stats"}


def test_sse_delivers_each_status_in_order_then_closes(svc: Service) -> None:
    job_id = submit(svc, "sleep:0.5")
    events = sse(svc, job_id)
    assert [d["status"] for e, d in events if e == "status"] == ["queued", "running", "succeeded"]
    assert events[-1][0] == "job"  # the final job, with its artifact links
    assert set(events[-1][1]["artifacts"]) == {"edge.png", "coloring_page.pdf"}


def test_long_poll_answers_when_the_job_ends_not_when_the_wait_runs_out(svc: Service) -> None:
    job_id = submit(svc, "sleep:1")
    wait_running(svc, job_id)
    with ThreadPoolExecutor(1) as pool:
        poll = pool.submit(
            svc.http.get, f"/jobs/{job_id}", params={"wait": 60, "seen": "running"}, timeout=90
        )
        job = poll.result().json()
    # The answer carries the final state, so it was sent after the job finished, and
    # well before the 60 s wait ran out: it was woken by the job's end.
    assert job["status"] == "succeeded"
    assert job["finished_at"] is not None
    assert poll.result().elapsed.total_seconds() < 30


def test_a_waiting_client_makes_exactly_one_request(svc: Service) -> None:
    job_id = submit(svc, "sleep:1")
    before = requests_counted(svc)
    changes: list[str] = []
    with Client(svc.url) as client:
        job = client.wait(job_id, on_change=lambda c: changes.append(c["status"]))
    after = requests_counted(svc)
    assert job["status"] == "succeeded"
    assert changes == ["queued", "running", "succeeded"]
    delta = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    assert delta == {"GET /jobs/{job_id}/events": 1}


def test_reprocess_makes_new_jobs_with_lineage_in_one_request(svc: Service) -> None:
    sources = [submit(svc, "fast") for _ in range(3)]
    with Client(svc.url) as client:
        for job_id in sources:
            assert client.wait(job_id)["status"] == "succeeded"
        redone = client.reprocess(sources, page_size="Letter", detail="high")
        assert [j["source_job_id"] for j in redone] == sources
        assert all(j["lane"] == "batch" and j["options"]["page_size"] == "Letter" for j in redone)
        finished = [client.wait(j["id"]) for j in redone]
    assert [j["status"] for j in finished] == ["succeeded"] * 3
    bad = svc.http.post("/jobs/reprocess", json={"job_ids": ["nope"]})
    assert bad.status_code == 404


def test_interactive_jobs_start_on_the_next_free_worker_despite_a_batch(
    svc: Service,
) -> None:
    def batch_job(_: int) -> str:
        resp = svc.http.post(
            "/jobs", files={"image": ("b.png", PNG)}, data={"title": "sleep:0.1", "lane": "batch"}
        )
        assert resp.status_code == 202
        return str(resp.json()["id"])

    with ThreadPoolExecutor(8) as pool:
        batch = list(pool.map(batch_job, range(300)))
    interactive = []
    for _ in range(5):
        job_id = submit(svc, "fast")
        interactive.append(svc.wait_final(job_id))
    assert svc.http.get("/stats").json()["queued_by_lane"]["batch"] > 0, "batch still pending"
    store = open_store(svc.store_url, migrate=False)
    try:
        batch_starts = sorted(store.attempts(b)[0].started_at for b in batch if store.attempts(b))
    finally:
        store.close()
    for job in interactive:
        created = datetime.fromisoformat(job["created_at"])
        started = datetime.fromisoformat(job["started_at"])
        jumped = [t for t in batch_starts if created < t < started]
        assert jumped == [], f"{len(jumped)} batch jobs started before an interactive one"
    with ThreadPoolExecutor(8) as pool:  # leave the module's service quiet
        list(pool.map(lambda b: svc.http.post(f"/jobs/{b}/cancel"), batch))


def test_web_page_is_served(svc: Service) -> None:
    page = svc.http.get("/")
    assert page.status_code == 200
    assert "EventSource" in page.text and 'type="file"' in page.text
