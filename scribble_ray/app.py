"""The ingress: a Ray Serve deployment with FastAPI routes, and the application builder.

Replicas are stateless. They store an upload once in the BlobStore, then talk to
the one Coordinator actor; they never touch the job store themselves.
"""

# No `from __future__ import annotations` here: Serve wraps the route methods, and
# FastAPI must see real types (Request, Status) to bind parameters.

import asyncio
import dataclasses
import json
import logging
import math
import typing
import unicodedata
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime
from importlib import resources
from typing import Annotated, Any

import ray
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, create_model
from ray import serve
from ray.serve import Application
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from scribble_ray.admission import AdmissionRefused
from scribble_ray.auth import Principal, TokenTable, load_tokens
from scribble_ray.blobs import open_blobs
from scribble_ray.coordinator import get_or_create_coordinator
from scribble_ray.jobs import (
    ARTIFACT_NAMES,
    INPUT_NAME,
    Detail,
    Job,
    JobOptions,
    Kind,
    Lane,
    NewJob,
    PageSize,
    Status,
    artifact_key,
)
from scribble_ray.preflight import alive_nodes, check_cluster
from scribble_ray.render.images import ImageRejected, decode_image
from scribble_ray.settings import Settings
from scribble_ray.tracing import Submission, configure_tracing

log = logging.getLogger(__name__)

MAX_WAIT_SECONDS = 60.0
SSE_KEEPALIVE_SECONDS = 15.0
SSE_MAX_SECONDS = 90.0  # below serve_config.yaml's request_timeout_s (120)
SSE_RETRY_MS = 1000
MAX_REPROCESS = 1000
JOB_OPTION_FIELDS = ("page_size", "detail", "title", "line_weight")
INDEX_HTML = (resources.files("scribble_ray") / "static" / "index.html").read_text()
REQUESTS: Counter[str] = Counter()  # per replica: "METHOD /route/{template}" -> count
COORDINATOR_START_TIMEOUT = 120.0
CONTENT_TYPES = {"edge.png": "image/png", "coloring_page.pdf": "application/pdf"}


class ApiError(Exception):
    """An error the client can act on: becomes {"error": {"code", "message"}}."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def _error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def _count_request(request: Request) -> None:
    """Count requests per route (a global dependency: it runs for every matched route)."""
    route = request.scope.get("route")
    REQUESTS[f"{request.method} {getattr(route, 'path', '?')}"] += 1


def request_counts() -> dict[str, int]:
    # A module function, not a read of REQUESTS in the method: Serve ships the ingress
    # class by value, with a copy of this module's globals, but this function by name.
    return dict(REQUESTS)


api = FastAPI(
    dependencies=[Depends(_count_request)],
    title="scribble-ray",
    version="0.1.0",
    description="Photo or prompt in, printable coloring page out. Every job runs exactly once.",
)


class ErrorDetail(BaseModel):
    code: str = Field(description="stable, machine-readable (see README, 'Status codes')")
    message: str = Field(description="for people; never a stack trace")


class ErrorBody(BaseModel):
    """Every error: {"error": {"code", "message"}}."""

    error: ErrorDetail


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the error statuses a route can answer."""
    what = {
        400: "a damaged upload or malformed body",
        401: "no valid API token (tokens are configured)",
        404: "no such job, or not the caller's",
        409: "the job has no artifacts yet",
        413: "upload has too many bytes or pixels",
        415: "not an image we accept (content sniffed), or wrong request type",
        422: "invalid parameters or options",
        429: "over the owner's submission rate or queued-jobs limit; see Retry-After",
    }
    out: dict[int | str, dict[str, Any]] = {
        s: {"model": ErrorBody, "description": what[s]} for s in statuses
    }
    if 429 in out:
        out[429]["headers"] = {
            "Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}
        }
    if 401 in out:
        out[401]["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    return out


JOB_READ_ERRORS = _errors(401, 404, 422)
BEARER = HTTPBearer(
    auto_error=False,
    description="An API token; its owner is the owner of the jobs it submits and may see.",
)


def _caller(
    request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]
) -> Principal:
    """The caller's owner, from `Authorization: Bearer <token>` (or `local` in open mode)."""
    tokens: TokenTable = serve.get_replica_context().servable_object.tokens
    principal = tokens.authenticate(request.headers.get("authorization"))
    if principal is None:
        raise ApiError(
            401,
            "unauthorized",
            "send a valid API token: `Authorization: Bearer <token>`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return principal


Caller = Annotated[Principal, Depends(_caller)]


def _refused(exc: AdmissionRefused) -> ApiError:
    cause = getattr(exc, "cause", exc)  # Ray wraps actor errors; the fields stay on both
    headers = {"Retry-After": str(cause.retry_after)}
    return ApiError(429, cause.code, cause.message, headers=headers)


def _printable(text: str) -> bool:
    """No control characters (NUL and friends break stores and logs) and no lone surrogates
    (not encodable); tabs, newlines and all other Unicode are fine."""
    return not any(unicodedata.category(c) in ("Cc", "Cs") and c not in "\t\n\r" for c in text)


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


class ReprocessRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job_ids: list[str] = Field(min_length=1, max_length=MAX_REPROCESS)
    page_size: PageSize | None = None
    detail: Detail | None = None
    title: str | None = Field(default=None, max_length=200)
    line_weight: float | None = Field(default=None, ge=0.5, le=3.0)
    lane: Lane = Lane.BATCH


@api.exception_handler(ApiError)
async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
    return _error(exc.status, exc.code, exc.message, exc.headers)


@api.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = {
        400: "bad_request",
        404: "not_found",
        405: "method_not_allowed",
        413: "upload_too_large",
    }.get(exc.status_code, "http_error")
    return _error(exc.status_code, code, str(exc.detail))


@api.exception_handler(RequestValidationError)
async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return _error(422, "invalid_request", f"{where}: {first.get('msg', 'invalid request')}")


@api.exception_handler(Exception)
async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error")  # the trace stays in the log, never in the response
    return _error(500, "internal_error", "internal error; the request was logged")


SUBMIT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "image": {"type": "string", "format": "binary"},
                        "prompt": {"type": "string"},
                        "page_size": {"type": "string", "enum": [p.value for p in PageSize]},
                        "detail": {"type": "string", "enum": [d.value for d in Detail]},
                        "title": {"type": "string", "maxLength": 200},
                        "line_weight": {"type": "number", "minimum": 0.5, "maximum": 3.0},
                    },
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["prompt"],
                    "properties": {
                        "prompt": {"type": "string"},
                        "page_size": {"type": "string", "enum": [p.value for p in PageSize]},
                        "detail": {"type": "string", "enum": [d.value for d in Detail]},
                        "title": {"type": "string", "maxLength": 200},
                        "line_weight": {"type": "number", "minimum": 0.5, "maximum": 3.0},
                    },
                }
            },
        },
    }
}


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and not 1 <= len(key) <= 200:
        raise ApiError(422, "invalid_request", "Idempotency-Key: 1 to 200 characters")
    return key


def _plausible_id(job_id: str) -> bool:
    return 0 < len(job_id) <= 100 and job_id.isprintable()


def _representable(ts: datetime) -> bool:
    """A time the stores can compare with (year 1 or 9999 can overflow a timestamp)."""
    try:
        return math.isfinite(ts.timestamp()) and 1970 <= ts.year <= 9000
    except (OverflowError, ValueError, OSError):
        return False


def _lane(value: Any) -> Lane:
    try:
        return Lane(value or Lane.INTERACTIVE)
    except (ValueError, TypeError):
        raise ApiError(422, "invalid_option", "lane is interactive or batch") from None


def _options(fields: dict[str, Any]) -> JobOptions:
    try:
        title = fields.get("title")
        if title is not None and (
            not isinstance(title, str) or len(title) > 200 or not _printable(title)
        ):
            raise ValueError("title must be text of at most 200 characters")
        for name in JOB_OPTION_FIELDS[:2]:
            if not isinstance(fields.get(name), str | None):
                raise ValueError(f"{name} must be text")
        return JobOptions.from_dict(fields)
    except ValueError as exc:
        raise ApiError(
            422,
            "invalid_option",
            f"{exc}; page_size is one of {[p.value for p in PageSize]}, "
            f"detail one of {[d.value for d in Detail]}",
        ) from None


def _replica_name() -> str:
    """This replica's id, naming the process in its spans."""
    try:
        return f"ingress-{serve.get_replica_context().replica_id.unique_id}"
    except Exception:  # RayServeException: not in a Serve replica
        return "ingress"


@serve.deployment
@serve.ingress(api)
class Ingress:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.tokens = load_tokens(settings.api_tokens_file, settings.api_tokens)
        self.blobs = open_blobs(settings.blob_url, s3_endpoint_url=settings.s3_endpoint_url)
        self.coordinator = get_or_create_coordinator(settings)
        configure_tracing(settings, "ingress", _replica_name())
        # A replica is ready once the coordinator answers (its store is migrated).
        ray.get(self.coordinator.ping.remote(), timeout=COORDINATOR_START_TIMEOUT)

    # -- submission --------------------------------------------------------------
    @api.post(
        "/jobs",
        status_code=202,
        openapi_extra=SUBMIT_BODY,
        responses={
            200: {"description": "the existing job of a repeated Idempotency-Key"},
            **_errors(400, 401, 413, 415, 422, 429),
        },
    )
    async def submit(self, request: Request, caller: Caller) -> JSONResponse:
        """Submit a photo (multipart `image`) or a prompt (JSON or form `prompt`).
        A W3C `traceparent` header makes the job's trace continue the caller's."""
        with Submission("POST /jobs", request.headers.get("traceparent")) as submission:
            return await self._submit(request, caller, submission)

    async def _submit(
        self, request: Request, caller: Principal, submission: Submission
    ) -> JSONResponse:
        fields, upload = await self._read_submission(request)
        options = _options(fields)
        job_id = str(uuid.uuid4())
        new = NewJob(
            id=job_id,
            kind=Kind.IMAGE if upload is not None else Kind.TEXT,
            options=options,
            owner=caller.owner,
            lane=_lane(fields.get("lane")),
            idempotency_key=_idempotency_key(request),
            max_attempts=self.settings.max_attempts,
            trace_id=submission.trace_id,
        )
        if upload is not None:
            new.input_key = artifact_key(job_id, INPUT_NAME)
            # Off the event loop: with S3 this is a network round trip of up to 20 MiB.
            await asyncio.to_thread(
                self.blobs.put, new.input_key, upload, "application/octet-stream"
            )
        else:
            new.prompt = self._prompt(fields.get("prompt"))
        try:
            job, created = await self.coordinator.submit.remote(new)
        except AdmissionRefused as exc:
            if new.input_key:  # refused: the stored upload belongs to no job
                await asyncio.to_thread(self.blobs.delete, new.input_key)
            raise _refused(exc) from None
        submission.jobs.append((job, created))
        if not created and new.input_key:
            # An idempotent repeat: keep only the first upload.
            await asyncio.to_thread(self.blobs.delete, new.input_key)
        return JSONResponse(
            self._public(job),
            status_code=202 if created else 200,
            headers={"Location": f"/jobs/{job.id}"},
        )

    async def _read_submission(self, request: Request) -> tuple[dict[str, Any], bytes | None]:
        length = request.headers.get("content-length")
        limit = self.settings.max_upload_bytes
        if length and length.isdigit() and int(length) > limit + 64 * 1024:
            raise ApiError(413, "upload_too_large", f"uploads are limited to {limit} bytes")
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("application/json"):
            try:
                body = json.loads(await request.body())
            except ValueError:
                raise ApiError(400, "invalid_json", "the body is not valid JSON") from None
            if not isinstance(body, dict):
                raise ApiError(400, "invalid_json", "the body must be a JSON object")
            return body, None
        if not content_type.startswith(
            ("multipart/form-data", "application/x-www-form-urlencoded")
        ):
            raise ApiError(
                415,
                "unsupported_media_type",
                "send multipart/form-data with an `image` file, or JSON with a `prompt`",
            )
        form = await request.form()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        image = form.get("image")
        if image is None:
            if "prompt" not in fields:
                raise ApiError(
                    422, "missing_input", "send an `image` file field or a `prompt` field"
                )
            return fields, None
        if not isinstance(image, UploadFile):
            raise ApiError(422, "missing_input", "`image` must be a file upload")
        data = await image.read(limit + 1)
        if len(data) > limit:
            raise ApiError(413, "upload_too_large", f"uploads are limited to {limit} bytes")
        try:
            # A small trial decode keeps bad files out of the queue: they get a 4xx now,
            # not a failed job later.
            await asyncio.to_thread(
                decode_image, data, max_pixels=self.settings.max_pixels, max_side=256
            )
        except ImageRejected as exc:
            raise ApiError(exc.http_status, exc.code, str(exc)) from None
        return fields, data

    def _prompt(self, prompt: Any) -> str:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ApiError(422, "missing_input", "`prompt` must be non-empty text")
        if not _printable(prompt):
            raise ApiError(422, "invalid_prompt", "`prompt` must not contain control characters")
        if len(prompt) > self.settings.max_prompt_chars:
            raise ApiError(
                422,
                "prompt_too_long",
                f"prompts are limited to {self.settings.max_prompt_chars} characters",
            )
        if self.settings.renderer == "local":
            raise ApiError(
                422,
                "renderer_unavailable",
                "text prompts need the Gemini renderer: set SCRIBBLE_RENDERER=gemini and "
                "GEMINI_API_KEY (see README, 'Configuration')",
            )
        return prompt.strip()

    # -- reading -----------------------------------------------------------------
    @api.get("/jobs/{job_id}", responses=JOB_READ_ERRORS)
    async def get_job(
        self,
        job_id: str,
        caller: Caller,
        wait: Annotated[float, Query(ge=0.0, allow_inf_nan=False)] = 0.0,
        seen: Status | None = None,
    ) -> JSONResponse:
        """The job. With `wait=S`, answer as soon as it changes or ends (long-poll)."""
        job = await self._job(job_id, caller)  # the owner check comes before any wait
        if wait > 0:
            job = await self.coordinator.wait.remote(job_id, seen, min(wait, MAX_WAIT_SECONDS))
        return JSONResponse(self._public(self._found(job, job_id)))

    @api.get("/jobs/{job_id}/attempts", responses=JOB_READ_ERRORS)
    async def get_attempts(self, job_id: str, caller: Caller) -> JSONResponse:
        """The attempts ledger: attempt, worker, node, started, finished, outcome."""
        await self._job(job_id, caller)
        attempts = await self.coordinator.attempts.remote(job_id)
        return JSONResponse({"job_id": job_id, "attempts": [a.to_public() for a in attempts]})

    @api.get(
        "/jobs/{job_id}/artifacts/{name}",
        response_model=None,
        response_class=Response,
        responses={
            200: {
                "description": "the artifact's bytes",
                "content": {"image/png": {}, "application/pdf": {}},
            },
            307: {"description": "a redirect to a presigned URL (S3), valid for 5 minutes"},
            **_errors(401, 404, 409, 422),
        },
    )
    async def get_artifact(self, job_id: str, name: str, caller: Caller) -> Response:
        """`edge.png` or `coloring_page.pdf`: the bytes, or a redirect to a presigned URL."""
        if name not in ARTIFACT_NAMES:
            raise ApiError(404, "unknown_artifact", f"artifacts are {', '.join(ARTIFACT_NAMES)}")
        job = await self._job(job_id, caller)
        if job.status is not Status.SUCCEEDED or name not in job.artifacts:
            raise ApiError(
                409, "not_ready", f"job is {job.status.value}; artifacts exist once it succeeded"
            )
        key = job.artifacts[name]
        url = self.blobs.url_for(key)
        if url:
            return RedirectResponse(url, status_code=307)
        try:
            stream = await asyncio.to_thread(self.blobs.open_stream, key)
        except KeyError:
            raise ApiError(404, "artifact_missing", f"{name} is missing from storage") from None
        return StreamingResponse(
            stream,
            media_type=CONTENT_TYPES[name],
            headers={"Content-Disposition": f'inline; filename="{name}"'},
        )

    @api.post("/jobs/{job_id}/cancel", responses=JOB_READ_ERRORS)
    async def cancel(self, job_id: str, caller: Caller) -> JSONResponse:
        """Cancel a queued or running job (a running attempt's late result is fenced off)."""
        await self._job(job_id, caller)
        job = self._found(await self.coordinator.cancel.remote(job_id), job_id)
        return JSONResponse(self._public(job))

    @api.get(
        "/jobs/{job_id}/events",
        response_model=None,
        response_class=StreamingResponse,
        responses={
            200: {
                "description": "`status` events, then a `job` event (or a reconnect hint)",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            **JOB_READ_ERRORS,
        },
    )
    async def job_events(self, job_id: str, caller: Caller) -> StreamingResponse:
        """Server-Sent Events: one `status` event per change, a final `job` event, then close.

        A stream closes itself after SSE_MAX_SECONDS (under the proxy's request timeout);
        the client reconnects (EventSource does so by itself; so does `Client.wait`)."""
        job = await self._job(job_id, caller)
        return StreamingResponse(
            self._event_stream(job),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _event_stream(self, job: Job) -> AsyncIterator[str]:
        deadline = asyncio.get_running_loop().time() + SSE_MAX_SECONDS
        yield f"retry: {SSE_RETRY_MS}\n\n"
        seen = 0
        history = await self.coordinator.events.remote(job.id, 0, 0.0)
        if not history:  # a coordinator restarted since: start from the stored state
            history = [{"status": job.status.value, "attempt": job.attempt}]
        while True:
            for change in history:
                yield _sse("status", {"id": job.id, **change})
                if Status(change["status"]).final:
                    final = await self.coordinator.get.remote(job.id)
                    yield _sse("job", self._public(final))
                    return
            seen += len(history)
            if asyncio.get_running_loop().time() > deadline:
                return  # before the proxy's request timeout; the client reconnects
            history = await self.coordinator.events.remote(job.id, seen, SSE_KEEPALIVE_SECONDS)
            if not history:
                latest = await self.coordinator.get.remote(job.id)
                if latest is not None and latest.status.final:  # missed while restarting
                    history = [{"status": latest.status.value, "attempt": latest.attempt}]
                else:
                    yield ": keep-alive\n\n"

    @api.post("/jobs/reprocess", status_code=202, responses=_errors(400, 401, 404, 422))
    async def reprocess(
        self, request: Request, body: ReprocessRequest, caller: Caller
    ) -> JSONResponse:
        """Run past jobs again with new options, in one request; each new job records its
        source (lineage). Defaults to the batch lane, below interactive work. The new jobs
        share one trace: the caller's (W3C `traceparent`) or the request's."""
        with Submission("POST /jobs/reprocess", request.headers.get("traceparent")) as sub:
            return await self._reprocess(body, caller, sub)

    async def _reprocess(
        self, body: ReprocessRequest, caller: Principal, submission: Submission
    ) -> JSONResponse:
        options = {k: v for k, v in body.model_dump().items() if k in JOB_OPTION_FIELDS and v}
        news = []
        for source_id in dict.fromkeys(body.job_ids):
            source = await self._job(source_id, caller)  # admins: any owner's job
            merged = _options({**source.options.to_dict(), **options})
            news.append(
                NewJob(
                    kind=source.kind,
                    options=merged,
                    owner=source.owner,
                    lane=body.lane,
                    prompt=source.prompt,
                    input_key=source.input_key,  # the upload is stored once, reused
                    source_job_id=source.id,
                    max_attempts=self.settings.max_attempts,
                    trace_id=submission.trace_id,
                )
            )
        results = await self.coordinator.submit_many.remote(news)
        submission.jobs.extend(results)
        return JSONResponse({"jobs": [self._public(job) for job, _ in results]}, status_code=202)

    @api.get("/jobs", responses=_errors(401, 422))
    async def list_jobs(
        self,
        caller: Caller,
        status: Status | None = None,
        before: datetime | None = None,
        limit: int = 50,
        owner: str | None = None,
    ) -> JSONResponse:
        """The caller's jobs, newest first; page with `before` = the last job's created_at.
        An admin token lists every owner's jobs, or one owner's with `owner`."""
        if not 1 <= limit <= 500:
            raise ApiError(422, "invalid_limit", "limit must be between 1 and 500")
        if before is not None and not _representable(before):
            raise ApiError(422, "invalid_request", "before: not a representable time")
        if not caller.admin:
            if owner not in (None, caller.owner):
                raise ApiError(422, "invalid_request", "owner: only admin tokens may list others")
            owner = caller.owner
        jobs = await self.coordinator.list_jobs.remote(
            owner=owner, status=status, before=before, limit=limit
        )
        return JSONResponse({"jobs": [self._public(j) for j in jobs]})

    @api.get("/stats", responses=_errors(401))
    async def stats(self, caller: Caller) -> JSONResponse:
        """Queue depth, jobs by status, pool size; `recent`: latencies (pickup, run,
        per stage), attempts and Gemini use over the latest 500 jobs; `ingress`: this
        replica's request counts."""
        stats = await self.coordinator.stats.remote()
        stats["ingress"] = {"replica_requests": request_counts()}
        return JSONResponse(stats)

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index(self) -> HTMLResponse:
        """The web page: pick a photo or type a prompt, watch it run, get the PDF."""
        return HTMLResponse(INDEX_HTML)

    @api.get("/healthz")
    async def healthz(self) -> JSONResponse:
        """200 when the coordinator answers."""
        epoch = await self.coordinator.ping.remote()
        return JSONResponse({"ok": True, "coordinator": epoch})

    # -- helpers -----------------------------------------------------------------
    async def _job(self, job_id: str, caller: Principal) -> Job:
        """The job if the caller may see it; else 404, the same as for no job (ids don't leak)."""
        job = await self.coordinator.get.remote(job_id) if _plausible_id(job_id) else None
        if job is None or not caller.may_see(job.owner):
            raise ApiError(404, "job_not_found", f"no job {job_id[:100]}")
        return job

    @staticmethod
    def _found(job: Job | None, job_id: str) -> Job:
        if job is None:
            raise ApiError(404, "job_not_found", f"no job {job_id}")
        return job

    def _public(self, job: Job) -> dict[str, Any]:
        out = job.to_public()
        out["owner"] = job.owner
        out["artifacts"] = {
            name: f"/jobs/{job.id}/artifacts/{name}" for name in sorted(job.artifacts)
        }
        return out


def _app_args_model() -> type[BaseModel]:
    """Typed application args: every Settings field, optional (unset falls back to the
    environment), plus the ingress replica count. Derived, so the two never drift."""
    hints = typing.get_type_hints(Settings)
    fields: dict[str, Any] = {
        f.name: (hints[f.name] | None, None) for f in dataclasses.fields(Settings)
    }
    fields["ingress_replicas"] = (int, 1)
    return create_model("AppArgs", __config__=ConfigDict(extra="forbid"), **fields)


AppArgs = _app_args_model()


def build_app(args: AppArgs) -> Application:  # type: ignore[valid-type]
    """The application builder named by serve_config.yaml: settings resolved once, here."""
    overrides = args.model_dump(exclude_none=True)  # type: ignore[attr-defined]
    replicas = overrides.pop("ingress_replicas")
    settings = Settings.resolve(overrides)
    check_cluster(settings, alive_nodes())  # one node's SQLite/folder cannot serve many
    tokens = load_tokens(settings.api_tokens_file, settings.api_tokens)  # fail early
    if tokens.open:
        log.warning(
            "scribble-ray runs in OPEN mode: no API tokens are configured, every caller is "
            "owner 'local' and may use every route. Bind it to 127.0.0.1 only, or set "
            "api_tokens_file / SCRIBBLE_API_TOKENS (README, 'Owners and tokens')."
        )
    else:
        log.info("API tokens: %d, owners: %s", len(tokens), dict(tokens.owners()))
    log.info("scribble-ray settings: %s", settings.public())
    return Ingress.options(
        num_replicas=replicas,
        ray_actor_options={"num_cpus": settings.ingress_num_cpus},
        max_ongoing_requests=settings.ingress_max_ongoing_requests,
    ).bind(settings)
