"""OpenTelemetry tracing: spans of real jobs, received by a fake OTLP/HTTP collector."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from scribble_ray import tracing
from scribble_ray.jobs import Job, JobOptions, Kind, Lane, PermanentJobError, Status
from scribble_ray.settings import Settings
from scribble_ray.stages import STAGES, StageClock
from tests.conftest import DATA, Service, free_port, start_service, stop_service
from tests.fake_otlp import STATUS_ERROR, FakeCollector, ReceivedSpan, fake_collector
from tests.test_exactly_once import FAST_RETRY, PNG

# -- pure helpers ------------------------------------------------------------------------


def test_traceparent_parsing() -> None:
    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    assert tracing.parse_traceparent(f"00-{trace_id}-{span_id}-01") == (trace_id, span_id)
    assert tracing.parse_traceparent(f" 00-{trace_id}-{span_id}-00 ") == (trace_id, span_id)
    assert tracing.parse_traceparent(f"01-{trace_id}-{span_id}-01-future") == (trace_id, span_id)
    for bad in [
        None,
        "",
        "garbage",
        f"00-{trace_id}-{span_id}-01-extra",  # version 00 has exactly four fields
        f"ff-{trace_id}-{span_id}-01",  # version ff is invalid
        f"00-{'0' * 32}-{span_id}-01",  # all-zero ids are invalid
        f"00-{trace_id}-{'0' * 16}-01",
        f"00-{trace_id.upper()}-{span_id}-01",  # lowercase hex only
        f"00-{trace_id[:-1]}-{span_id}-01",
    ]:
        assert tracing.parse_traceparent(bad) is None, bad


def test_ids_and_urls() -> None:
    assert tracing.traces_url("http://jaeger:4318") == "http://jaeger:4318/v1/traces"
    assert tracing.traces_url("http://jaeger:4318/") == "http://jaeger:4318/v1/traces"
    assert tracing.traces_url("http://c:4318/v1/traces") == "http://c:4318/v1/traces"
    job_id = str(uuid.uuid4())
    assert tracing.submission_span_id(job_id) == tracing.submission_span_id(job_id)
    assert tracing.submission_span_id(job_id) != tracing.submission_span_id(job_id + "x")
    assert 0 < tracing.submission_span_id(job_id) < 2**64
    hex_id = uuid.uuid4().hex
    assert tracing.trace_id_int(hex_id) == int(hex_id, 16)
    assert tracing.trace_id_int(None) is None
    assert tracing.trace_id_int("0" * 32) is None
    assert tracing.trace_id_int("xyz") is None
    with pytest.raises(ValueError, match="otlp_endpoint"):
        Settings.resolve({"otlp_endpoint": "127.0.0.1:4318"}, env={})


def _job(attempt: int = 1) -> Job:
    now = datetime.now(UTC)
    return Job(
        id=str(uuid.uuid4()),
        kind=Kind.IMAGE,
        status=Status.RUNNING,
        attempt=attempt,
        max_attempts=3,
        options=JobOptions(),
        owner="local",
        lane=Lane.INTERACTIVE,
        created_at=now,
        started_at=now,
        trace_id=uuid.uuid4().hex,
    )


def test_tracing_off_is_a_no_op(tmp_path: Path) -> None:
    settings = Settings.resolve({"data_dir": str(tmp_path)}, env={})
    assert settings.otlp_endpoint == ""

    def run(job: Job) -> str:
        return job.id

    assert tracing.traced_attempts(run, settings, "pipeline-0") is run  # not even wrapped
    assert not tracing.enabled()
    with tracing.Submission("POST /jobs", None) as submission:
        assert len(submission.trace_id) == 32
    clock = StageClock()
    with clock.stage("render"):
        pass
    assert set(clock.timings) == {"render"}


def test_attempt_and_stage_spans_in_process(tmp_path: Path) -> None:
    """The worker's helpers in this process, against the fake collector (no Ray)."""
    with fake_collector() as collector:
        settings = Settings.resolve(
            {"data_dir": str(tmp_path), "otlp_endpoint": collector.url}, env={}
        )
        job = _job()
        try:

            def stages(job: Job, clock: StageClock) -> None:
                with clock.stage("fetch"):
                    pass
                with clock.stage("render"):
                    raise PermanentJobError("no lines", code="no_lines")

            run = tracing.traced_attempts(stages, settings, "pipeline-t")
            with pytest.raises(PermanentJobError):
                run(job, StageClock())
        finally:
            tracing.shutdown()  # flushes
        spans = {s.name: s for s in collector.trace(job.trace_id or "")}
    assert set(spans) == {"queued", "attempt 1", "fetch", "render"}
    attempt, render = spans["attempt 1"], spans["render"]
    submission = f"{tracing.submission_span_id(job.id):016x}"
    assert spans["queued"].parent_span_id == attempt.parent_span_id == submission
    assert spans["fetch"].parent_span_id == render.parent_span_id == attempt.span_id
    assert render.status_code == attempt.status_code == STATUS_ERROR
    assert render.attributes["stage.outcome"] == attempt.attributes["attempt.outcome"] == "no_lines"
    assert "exception" in render.events
    assert spans["fetch"].attributes["stage.outcome"] == "ok"
    assert render.attributes["job.id"] == job.id and render.attributes["job.attempt"] == 1
    assert attempt.resource["service.name"] == "scribble-ray"
    assert attempt.resource["scribble.role"] == "pipeline"
    assert attempt.resource["service.instance.id"] == "pipeline-t"
    assert not tracing.enabled()


# -- a real service ----------------------------------------------------------------------


def test_a_dead_collector_never_fails_or_slows_a_job(serve_url: str, tmp_path: Path) -> None:
    # (First in this module: a service is one Serve app, so it must be gone before the
    # module's traced service below is started.)
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    svc = start_service(serve_url, tmp_path, otlp_endpoint=dead, **FAST_RETRY)
    try:
        headers = {"traceparent": f"00-{uuid.uuid4().hex}-{os.urandom(8).hex()}-01"}
        ids = []
        for title in ["fast", "fast", "fail"]:
            resp = svc.http.post(
                "/jobs", files={"image": ("t.png", PNG)}, data={"title": title}, headers=headers
            )
            assert resp.status_code == 202, resp.text
            ids.append(resp.json()["id"])
        jobs = [svc.wait_final(job_id) for job_id in ids]
    finally:
        stop_service(svc)
    assert [j["status"] for j in jobs] == ["succeeded", "succeeded", "failed"]
    for job in jobs[:2]:
        # An export blocking a stage would take the exporter's timeout (its retries of the
        # refused connection); the stages take milliseconds.
        assert sum(job["timings"][s] for s in STAGES) < tracing.EXPORT_TIMEOUT_SECONDS, job


@pytest.fixture(scope="module")
def collector() -> Iterator[FakeCollector]:
    with fake_collector() as c:
        yield c


@pytest.fixture(scope="module")
def traced(
    serve_url: str, tmp_path_factory: pytest.TempPathFactory, collector: FakeCollector
) -> Iterator[Service]:
    svc = start_service(
        serve_url, tmp_path_factory.mktemp("traced"), otlp_endpoint=collector.url, **FAST_RETRY
    )
    yield svc
    stop_service(svc)


def caller_traceparent() -> tuple[str, str, dict[str, str]]:
    trace_id, span_id = uuid.uuid4().hex, os.urandom(8).hex()
    return trace_id, span_id, {"traceparent": f"00-{trace_id}-{span_id}-01"}


def spans_named(
    collector: FakeCollector, trace_id: str, names: set[str]
) -> dict[str, ReceivedSpan]:
    """The trace's spans by name, once every name has arrived (each exactly once)."""
    collector.wait_for(lambda spans: names <= {s.name for s in spans if s.trace_id == trace_id})
    spans = collector.trace(trace_id)
    assert sorted(s.name for s in spans if s.name in names) == sorted(names), "duplicates"
    return {s.name: s for s in spans}


def ns(iso: str) -> int:
    return tracing.to_ns(datetime.fromisoformat(iso))


def test_a_job_is_one_trace_continuing_the_callers(
    traced: Service, collector: FakeCollector
) -> None:
    trace_id, caller_span, headers = caller_traceparent()
    with (DATA / "chelsea.png").open("rb") as photo:
        resp = traced.http.post(
            "/jobs",
            files={"image": ("chelsea.png", photo)},
            data={"title": "sleep:0.3"},
            headers=headers,
        )
    assert resp.status_code == 202, resp.text
    assert resp.json()["trace_id"] == trace_id
    job = traced.wait_final(resp.json()["id"])
    assert job["status"] == "succeeded"
    assert job["trace_id"] == trace_id  # GET /jobs/{id} shows it

    spans = spans_named(collector, trace_id, {"POST /jobs", "queued", "attempt 1", *STAGES})
    submit, queued, attempt = spans["POST /jobs"], spans["queued"], spans["attempt 1"]
    assert submit.parent_span_id == caller_span  # the caller's trace goes on
    assert submit.attributes["job.id"] == job["id"]
    assert submit.attributes["http.response.status_code"] == 202
    assert submit.resource["scribble.role"] == "ingress"
    assert submit.resource["service.name"] == "scribble-ray"
    assert queued.parent_span_id == attempt.parent_span_id == submit.span_id
    assert attempt.attributes["job.id"] == job["id"]
    assert attempt.attributes["job.attempt"] == 1
    assert attempt.attributes["job.kind"] == "image"
    assert attempt.attributes["scribble.worker"].startswith("pipeline-")
    assert attempt.resource["scribble.role"] == "pipeline"
    assert attempt.status_code != STATUS_ERROR
    # The queued span is the job's own record of its wait: created_at to started_at.
    assert abs(queued.start_ns - ns(job["created_at"])) < 2_000_000
    assert abs(queued.end_ns - ns(job["started_at"])) < 2_000_000
    for name in STAGES:
        stage = spans[name]
        assert stage.parent_span_id == attempt.span_id, name
        assert attempt.start_ns <= stage.start_ns <= stage.end_ns <= attempt.end_ns
        assert stage.attributes["stage.outcome"] == "ok"
        assert stage.attributes["job.id"] == job["id"]
        assert abs(stage.seconds - job["timings"][name]) < 1e-6, (name, stage.seconds)
    assert spans["render"].seconds >= 0.3


def test_a_failing_job_has_error_spans(traced: Service, collector: FakeCollector) -> None:
    resp = traced.http.post("/jobs", files={"image": ("t.png", PNG)}, data={"title": "fail"})
    assert resp.status_code == 202, resp.text
    job = traced.wait_final(resp.json()["id"])
    assert job["status"] == "failed" and job["error"]["code"] == "scripted_failure"

    spans = spans_named(collector, job["trace_id"], {"POST /jobs", "attempt 1", "render"})
    for name in ["attempt 1", "render"]:
        assert spans[name].status_code == STATUS_ERROR, name
        assert "exception" in spans[name].events
    assert spans["render"].attributes["stage.outcome"] == "scripted_failure"
    assert spans["POST /jobs"].parent_span_id == ""  # no traceparent: the job's own trace
    assert spans["POST /jobs"].status_code != STATUS_ERROR
    assert "encode_png" not in {s.name for s in collector.trace(job["trace_id"])}


def test_reprocessed_jobs_share_the_requests_trace(
    traced: Service, collector: FakeCollector
) -> None:
    sources = []
    for _ in range(2):
        resp = traced.http.post("/jobs", files={"image": ("t.png", PNG)}, data={"title": "fast"})
        sources.append(traced.wait_final(resp.json()["id"])["id"])
    trace_id, caller_span, headers = caller_traceparent()
    resp = traced.http.post("/jobs/reprocess", json={"job_ids": sources}, headers=headers)
    assert resp.status_code == 202, resp.text
    redone = [traced.wait_final(j["id"]) for j in resp.json()["jobs"]]
    assert [j["status"] for j in redone] == ["succeeded", "succeeded"]
    assert {j["trace_id"] for j in redone} == {trace_id}

    def arrived(spans: list[ReceivedSpan]) -> bool:
        names = [s.name for s in spans if s.trace_id == trace_id]
        return "POST /jobs/reprocess" in names and names.count("attempt 1") == 2

    collector.wait_for(arrived)
    spans = collector.trace(trace_id)
    request = next(s for s in spans if s.name == "POST /jobs/reprocess")
    assert request.parent_span_id == caller_span
    submitted: dict[Any, ReceivedSpan] = {
        s.attributes["job.id"]: s for s in spans if s.name == "submit"
    }
    assert set(submitted) == {j["id"] for j in redone}
    assert {s.parent_span_id for s in submitted.values()} == {request.span_id}
    for s in spans:
        if s.name == "attempt 1":  # each attempt hangs under its own job's submission
            assert s.parent_span_id == submitted[s.attributes["job.id"]].span_id


def test_a_client_error_is_traced_but_not_an_error_span(
    traced: Service, collector: FakeCollector
) -> None:
    trace_id, caller_span, headers = caller_traceparent()
    started = time.monotonic()
    resp = traced.http.post(
        "/jobs", files={"image": ("t.png", PNG)}, data={"page_size": "A3"}, headers=headers
    )
    assert resp.status_code == 422
    spans = spans_named(collector, trace_id, {"POST /jobs"})
    submit = spans["POST /jobs"]
    assert submit.parent_span_id == caller_span
    assert submit.attributes["http.response.status_code"] == 422
    assert submit.attributes["error.type"] == "invalid_option"
    assert submit.status_code != STATUS_ERROR
    assert submit.seconds < time.monotonic() - started
