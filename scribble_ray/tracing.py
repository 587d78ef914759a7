"""OpenTelemetry traces of a job's life: its submission, time queued, attempts and stages.

Off unless the `otlp_endpoint` setting is set. Then each process that emits spans (the
ingress replicas, the pipeline workers) gets its own TracerProvider exporting OTLP/HTTP
from a background thread. Off, no provider exists and every helper here is a no-op.

Every span of a job is in the job's trace (`job.trace_id`). The submission span's id is
derived from the job id, so the worker, which only has the job, can parent its `queued`
and `attempt N` spans to it with nothing more stored: one tree per job,
caller's span -> POST /jobs -> queued, attempt 1 -> fetch, render, encode_png, pdf, store.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.id_generator import IdGenerator

    from scribble_ray.jobs import Job
    from scribble_ray.settings import Settings

log = logging.getLogger(__name__)

SERVICE_NAME = "scribble-ray"
TRACES_PATH = "/v1/traces"
# Exports run on the processor's thread, never a job's; a dead collector costs that
# thread at most this long per batch (retries included), then the batch is dropped.
EXPORT_TIMEOUT_SECONDS = 2.0
# Short, because the coordinator stops idle workers with ray.kill, which skips the
# exit-time flush: at most this much of a worker's spans can be lost that way.
SCHEDULE_DELAY_MS = 500

F = TypeVar("F", bound=Callable[..., Any])

_provider: TracerProvider | None = None
_tracer: trace.Tracer = trace.NoOpTracer()
_worker: str | None = None
# Ids the next span must have: the job's trace id for a root span, a derived span id.
_forced_ids: ContextVar[tuple[int | None, int | None]] = ContextVar(
    "scribble_forced_ids", default=(None, None)
)
# The attempt's attributes, repeated on its stage spans (set in the stage thread).
_attempt_attrs: ContextVar[dict[str, Any] | None] = ContextVar(
    "scribble_attempt_attrs", default=None
)

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")


class Parent(NamedTuple):
    """A caller's span, from a W3C `traceparent` header."""

    trace_id: str  # 32 hex
    span_id: str  # 16 hex


def parse_traceparent(value: str | None) -> Parent | None:
    """The caller's trace and span of a W3C `traceparent`, or None if absent or invalid."""
    match = _TRACEPARENT.fullmatch((value or "").strip())
    if not match:
        return None
    version, trace_id, span_id, _, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or not int(trace_id, 16):
        return None
    return Parent(trace_id, span_id) if int(span_id, 16) else None


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL of a collector's base URL (or of the traces URL itself)."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith(TRACES_PATH) else endpoint + TRACES_PATH


def submission_span_id(job_id: str) -> int:
    """The span id of a job's submission span: derived, so the worker can find it."""
    digest = hashlib.sha256(f"scribble-ray submission {job_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") or 1  # 0 is the invalid span id


def trace_id_int(trace_id: str | None) -> int | None:
    """A stored trace id as OTel's integer, or None when it is not a valid one."""
    try:
        value = int(trace_id or "", 16)
    except ValueError:
        return None
    return value if len(trace_id or "") == 32 and value else None


def to_ns(ts: datetime) -> int:
    return int(ts.timestamp() * 1_000_000_000)


def enabled() -> bool:
    return _provider is not None


def configure_tracing(settings: Settings, role: str, name: str) -> None:
    """Set up this process's exporter once, if tracing is configured (else nothing)."""
    global _provider, _tracer, _worker
    if not settings.otlp_endpoint or _provider is not None:
        return
    # Imported here: a process without tracing never loads the SDK or the exporter.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON

    resource = Resource.create(
        {
            "service.name": SERVICE_NAME,
            "service.namespace": settings.namespace,
            "service.instance.id": name,
            "scribble.role": role,
        }
    )
    # Every job is traced whole (ALWAYS_ON): a caller's unsampled flag would otherwise
    # drop the submission span but not the worker's spans. shutdown_on_exit (default)
    # flushes at a graceful exit.
    provider = TracerProvider(resource=resource, sampler=ALWAYS_ON, id_generator=_job_ids())
    exporter = OTLPSpanExporter(
        endpoint=traces_url(settings.otlp_endpoint), timeout=EXPORT_TIMEOUT_SECONDS
    )
    provider.add_span_processor(
        BatchSpanProcessor(
            exporter,
            schedule_delay_millis=SCHEDULE_DELAY_MS,
            export_timeout_millis=EXPORT_TIMEOUT_SECONDS * 1000,
        )
    )
    _provider, _tracer, _worker = provider, provider.get_tracer("scribble_ray"), name
    log.info("tracing: %s exports spans to %s", name, traces_url(settings.otlp_endpoint))


def shutdown() -> None:
    """Flush and stop this process's exporter (also run at a graceful exit)."""
    global _provider, _tracer
    if _provider is not None:
        _provider.shutdown()
        _provider, _tracer = None, trace.NoOpTracer()


def _start_span(
    name: str,
    *,
    trace_id: int | None = None,
    span_id: int | None = None,
    parent: Context | None = None,
    **kwargs: Any,
) -> Span:
    """A span with the given ids (the trace id applies to a root span only)."""
    token = _forced_ids.set((trace_id, span_id))
    try:
        return _tracer.start_span(name, context=parent or Context(), **kwargs)
    finally:
        _forced_ids.reset(token)


def _remote_parent(trace_id: int, span_id: int) -> Context:
    span = NonRecordingSpan(
        SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    )
    return trace.set_span_in_context(span, Context())


def _failed(span: Span, exc: BaseException) -> str:
    """Record an error on the span; returns its code (JobError's, else the type name)."""
    code = str(getattr(exc, "code", None) or type(exc).__name__)
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{code}: {exc}"))
    span.set_attribute("error.type", code)
    return code


# -- the ingress ---------------------------------------------------------------------


class Submission:
    """One submitting request (POST /jobs, POST /jobs/reprocess): picks the trace id of
    the jobs it creates (the caller's, from `traceparent`, or a new one) and records
    its span in their trace when it ends."""

    def __init__(self, route: str, traceparent: str | None) -> None:
        self.route = route
        self.caller = parse_traceparent(traceparent)
        self.trace_id = self.caller.trace_id if self.caller else uuid.uuid4().hex
        self.jobs: list[tuple[Job, bool]] = []  # (job, created) as the coordinator answered
        self._start_ns = time.time_ns()

    def __enter__(self) -> Submission:
        return self

    def __exit__(
        self, _: type[BaseException] | None, exc: BaseException | None, __: TracebackType | None
    ) -> None:
        if _provider is None:
            return
        try:
            self._record(exc)
        except Exception:  # tracing must never fail a request
            log.warning("could not record the span of %s", self.route, exc_info=True)

    def _record(self, exc: BaseException | None) -> None:
        end = time.time_ns()
        only = self.jobs[0] if len(self.jobs) == 1 else None
        # One job: its trace (an idempotent repeat answers with an older job and trace),
        # and its submission span is this one, unless a repeat (whose id is taken).
        trace_hex = only[0].trace_id if only and only[0].trace_id else self.trace_id
        derived = submission_span_id(only[0].id) if only and only[1] else None
        caller = self.caller if self.caller and self.caller.trace_id == trace_hex else None
        span = _start_span(
            self.route,
            trace_id=trace_id_int(trace_hex),
            span_id=derived,
            parent=_remote_parent(int(caller.trace_id, 16), int(caller.span_id, 16))
            if caller
            else None,
            kind=SpanKind.SERVER,
            start_time=self._start_ns,
            attributes={
                "http.request.method": self.route.split()[0],
                "http.route": self.route.split()[-1],
                "scribble.jobs": len(self.jobs),
            },
        )
        status = getattr(exc, "status", 500) if exc else (202 if not only or only[1] else 200)
        span.set_attribute("http.response.status_code", status)
        if only:
            span.set_attributes(_job_attributes(only[0]))
        if exc is not None and status >= 500:
            _failed(span, exc)
        elif exc is not None:  # a client error: not the server's failure (semconv)
            span.set_attribute("error.type", str(getattr(exc, "code", type(exc).__name__)))
        if len(self.jobs) > 1:  # reprocess: one child per new job, the one its worker finds
            parent = trace.set_span_in_context(span, Context())
            for job, created in self.jobs:
                if created:
                    child = _start_span(
                        "submit",
                        span_id=submission_span_id(job.id),
                        parent=parent,
                        start_time=self._start_ns,
                        attributes=_job_attributes(job),
                    )
                    child.end(end)
        span.end(end)


def _job_attributes(job: Job) -> dict[str, Any]:
    attrs: dict[str, Any] = {"job.id": job.id, "job.kind": job.kind.value}
    attrs["job.lane"] = job.lane.value
    if job.source_job_id:
        attrs["job.source_id"] = job.source_job_id
    return attrs


# -- the pipeline worker -------------------------------------------------------------


def traced_attempts(run_stages: F, settings: Settings, worker: str) -> F:
    """`run_stages` as a pipeline worker runs it: in an `attempt N` span (after a
    `queued` span on the first attempt) when tracing is configured; else unchanged."""
    configure_tracing(settings, "pipeline", worker)
    if _provider is None:
        return run_stages

    @functools.wraps(run_stages)
    def run(job: Job, *args: Any) -> Any:
        with attempt_span(job):
            return run_stages(job, *args)

    return run  # type: ignore[return-value]


@contextmanager
def attempt_span(job: Job) -> Iterator[None]:
    """The attempt's span, current for its stages; an error is recorded, then raised."""
    trace_id = trace_id_int(job.trace_id)
    parent = _remote_parent(trace_id, submission_span_id(job.id)) if trace_id else None
    attrs = {**_job_attributes(job), "job.attempt": job.attempt, "scribble.worker": _worker or ""}
    if job.attempt == 1 and job.started_at is not None:  # a retry's wait is in its ledger
        queued = _start_span(
            "queued", parent=parent, start_time=to_ns(job.created_at), attributes=attrs
        )
        queued.end(to_ns(job.started_at))
    span = _start_span(f"attempt {job.attempt}", parent=parent, attributes=attrs)
    token = _attempt_attrs.set(attrs)
    try:
        with trace.use_span(
            span, end_on_exit=True, record_exception=False, set_status_on_exception=False
        ):
            try:
                yield
            except BaseException as exc:
                span.set_attribute("attempt.outcome", _failed(span, exc))
                raise
            span.set_attribute("attempt.outcome", "ok")
    finally:
        _attempt_attrs.reset(token)


class StageSpan:
    """One stage's span, a child of the current attempt's; nothing when tracing is off.

    The stage's clock sets `seconds`: the span lasts exactly the job's `timings` entry
    (a thread switch between the two clocks' readings would otherwise show)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seconds: float | None = None
        self._span: Span | None = None

    def __enter__(self) -> StageSpan:
        if _provider is not None:
            self._start_ns = time.time_ns()
            attrs = {**(_attempt_attrs.get() or {}), "stage.name": self.name}
            self._span = _tracer.start_span(self.name, start_time=self._start_ns, attributes=attrs)
            self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self

    def __exit__(
        self, _: type[BaseException] | None, exc: BaseException | None, __: TracebackType | None
    ) -> None:
        if self._span is None:
            return
        otel_context.detach(self._token)
        self._span.set_attribute("stage.outcome", _failed(self._span, exc) if exc else "ok")
        seconds = self.seconds
        self._span.end(None if seconds is None else self._start_ns + int(seconds * 1e9))


def _job_ids() -> IdGenerator:
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class JobIds(RandomIdGenerator):
        """Random ids, except for a span that must have its job's trace or a derived id."""

        def generate_trace_id(self) -> int:
            return _forced_ids.get()[0] or super().generate_trace_id()

        def generate_span_id(self) -> int:
            return _forced_ids.get()[1] or super().generate_span_id()

        def is_trace_id_random(self) -> bool:
            return False  # a job's trace id can be its caller's

    return JobIds()
