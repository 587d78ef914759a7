"""No bad input takes the service down: a generated corpus gets its documented statuses,
per-owner limits answer 429, and schemathesis fuzzes the OpenAPI schema without a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from scribble_ray.client import Client
from tests.bad_input_corpus import CASES, Case, good_png
from tests.conftest import ROOT, Service, start_service, stop_service
from tests.fake_sse import TOKEN, ClosedEarlyEvents

TOKENS = {
    "alice": "alice-token-0123456789",
    "flood": "flood-token-0123456789",
    "queue": "queue-token-0123456789",
    "fuzz": "fuzz-token-01234567890",
}
PER_MINUTE = 30
MAX_QUEUED = 5
FUZZ_EXAMPLES = 30  # per operation and generation mode: the whole fuzz stays < 2 min


def bearer(owner: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[owner]}"}


@pytest.fixture(scope="module")
def svc(serve_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    service = start_service(
        serve_url,
        tmp_path_factory.mktemp("bad-input"),
        renderer="tests.decoding_renderer:decoding",
        pool_min=1,
        pool_max=1,  # one worker: a sleeping job holds the queue still (queue-cap test)
        api_tokens=",".join(f"{o}={t}" for o, t in TOKENS.items()),
        max_submissions_per_minute=PER_MINUTE,
        max_queued_per_owner=MAX_QUEUED,
    )
    service.http.headers.update(bearer("alice"))
    yield service
    stop_service(service)


def assert_error(resp: httpx.Response, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text[:500]
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    assert "Traceback" not in resp.text and 'File "' not in resp.text


def wait_final(svc: Service, job_id: str, headers: dict[str, str]) -> dict[str, Any]:
    """Long-poll as `headers`' owner until the job is final."""
    job: dict[str, Any] = {"status": "queued"}
    while job["status"] not in {"succeeded", "failed", "cancelled"}:
        resp = svc.http.get(
            f"/jobs/{job_id}", params={"wait": 30, "seen": job["status"]}, headers=headers
        )
        assert resp.status_code == 200, resp.text
        job = resp.json()
    return job


def stored_files(svc: Service) -> list[str]:
    root = svc.data_dir / "blobs"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def good_job_succeeds(svc: Service) -> None:
    resp = svc.http.post("/jobs", files={"image": ("ok.png", good_png(1), "image/png")})
    assert resp.status_code == 202, resp.text
    assert svc.wait_final(resp.json()["id"])["status"] == "succeeded"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_corpus_gets_its_documented_status_and_a_good_job_still_succeeds(
    svc: Service, case: Case
) -> None:
    resp = svc.http.post("/jobs", **case.request())
    if case.accepted:
        assert resp.status_code == 202, resp.text[:500]
        job = svc.wait_final(resp.json()["id"])
        assert job["status"] == "succeeded", job
        assert job["attempt"] == 1
    else:
        assert case.code is not None
        assert_error(resp, case.status, case.code)
    good_job_succeeds(svc)


def test_the_corpus_is_not_vacuous() -> None:
    """The corpus would notice a service that accepted everything, or refused everything."""
    statuses = {c.status for c in CASES}
    assert {202, 400, 413, 415, 422} <= statuses
    assert sum(c.accepted for c in CASES) == 4


def test_rate_limit_answers_429_with_retry_after(svc: Service) -> None:
    # The same Idempotency-Key each time: one job at most, so only the rate can refuse.
    headers = {**bearer("flood"), "Idempotency-Key": "flood-1"}
    statuses = []
    refused = None
    for _ in range(PER_MINUTE + 5):
        resp = svc.http.post("/jobs", json={"prompt": "a kite"}, headers=headers)
        statuses.append(resp.status_code)
        if resp.status_code == 429:
            refused = resp
            break
    assert refused is not None, statuses
    assert statuses.count(202) == 1 and len(statuses) >= PER_MINUTE, statuses
    assert_error(refused, 429, "rate_limited")
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    # Another owner is not slowed down by the flood.
    assert svc.http.post("/jobs", json={"prompt": "a kite"}, headers=bearer("queue")).is_success


def test_queued_jobs_cap_answers_429_and_refused_uploads_are_not_kept(svc: Service) -> None:
    headers = bearer("queue")
    holder = svc.http.post(
        "/jobs",
        files={"image": ("h.png", good_png(2), "image/png")},
        data={"title": "sleep:3"},
        headers=headers,
    ).json()["id"]
    running = svc.http.get(
        f"/jobs/{holder}", params={"wait": 30, "seen": "queued"}, headers=headers
    ).json()
    assert running["status"] == "running"  # the only worker is busy: the rest stay queued
    queued = svc.http.get("/jobs", params={"status": "queued"}, headers=headers).json()["jobs"]
    accepted = [j["id"] for j in queued]
    while len(accepted) < MAX_QUEUED:
        resp = svc.http.post(
            "/jobs", files={"image": ("q.png", good_png(3), "image/png")}, headers=headers
        )
        assert resp.status_code == 202, resp.text
        accepted.append(resp.json()["id"])
    inputs_before = stored_files(svc)
    refused = svc.http.post(
        "/jobs", files={"image": ("q.png", good_png(3), "image/png")}, headers=headers
    )
    assert_error(refused, 429, "too_many_queued_jobs")
    assert int(refused.headers["retry-after"]) >= 1
    assert stored_files(svc) == inputs_before
    for job_id in [holder, *accepted]:
        assert svc.http.post(f"/jobs/{job_id}/cancel", headers=headers).status_code == 200
    resp = svc.http.post("/jobs", json={"prompt": "room again"}, headers=headers)
    assert resp.status_code == 202, resp.text
    assert wait_final(svc, resp.json()["id"], headers)["status"] == "succeeded"


def test_request_timeout_is_configured() -> None:
    for name in ("serve_config.yaml", "serve_config.production.yaml"):
        options = yaml.safe_load((ROOT / name).read_text())["http_options"]
        assert 60 < options["request_timeout_s"] <= 300, name  # above the longest long-poll


def test_client_wait_outlives_streams_closed_before_the_request_timeout() -> None:
    """The server closes an SSE stream after SSE_MAX_SECONDS; Client.wait reconnects, and
    reports each change once (a new stream replays the history)."""
    events = ClosedEarlyEvents()
    changes: list[str] = []
    with Client("http://test", token=TOKEN) as client:
        client.http = httpx.Client(
            base_url="http://test",
            headers=client.http.headers,
            transport=httpx.MockTransport(events),
        )
        job = client.wait("j", timeout=30, on_change=lambda c: changes.append(c["status"]))
    assert job == {"id": "j", "status": "succeeded"}
    assert len(events.served) == 2
    assert changes == ["queued", "running", "succeeded"]


# -- schemathesis against the live schema --------------------------------------------------

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def fuzz_operation(svc: Service, operation: Any, mode: schemathesis.GenerationMode) -> None:
    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=svc.url, headers=bearer("fuzz"), checks=CHECKS, timeout=30)

    run()


def test_schemathesis_finds_no_5xx_and_no_response_outside_the_schema(svc: Service) -> None:
    schema = schemathesis.openapi.from_url(f"{svc.url}/openapi.json")
    failures: dict[str, str] = {}
    tested = []
    for result in schema.get_all_operations():
        operation = result.ok()
        tested.append(operation.label)
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            try:
                fuzz_operation(svc, operation, mode)
            except Unsatisfiable:
                assert mode is schemathesis.GenerationMode.NEGATIVE, operation.label
                assert not operation.path_parameters and not operation.query, operation.label
                # (nothing to make invalid: no parameters and no body)
            except Exception as exc:  # every operation is fuzzed; all failures reported
                failures[f"{operation.label} [{mode.value}]"] = str(exc)[:2000]
    assert len(tested) >= 9, tested
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())
    good_job_succeeds(svc)
