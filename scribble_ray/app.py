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
import typing
import uuid
from typing import Any

import ray
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, create_model
from ray import serve
from ray.serve import Application
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from scribble_ray.blobs import open_blobs
from scribble_ray.coordinator import get_or_create_coordinator
from scribble_ray.jobs import (
    ARTIFACT_NAMES,
    INPUT_NAME,
    Detail,
    Job,
    JobOptions,
    Kind,
    NewJob,
    PageSize,
    Status,
    artifact_key,
)
from scribble_ray.preflight import alive_nodes, check_cluster
from scribble_ray.render.images import ImageRejected, decode_image
from scribble_ray.settings import Settings

log = logging.getLogger(__name__)

MAX_WAIT_SECONDS = 60.0
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


api = FastAPI(
    title="scribble-ray",
    version="0.1.0",
    description="Photo or prompt in, printable coloring page out. Every job runs exactly once.",
)


@api.exception_handler(ApiError)
async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
    return _error(exc.status, exc.code, exc.message, exc.headers)


@api.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
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
                    },
                }
            },
        },
    }
}


def _options(fields: dict[str, Any]) -> JobOptions:
    try:
        title = fields.get("title")
        if title is not None and (not isinstance(title, str) or len(title) > 200):
            raise ValueError("title must be text of at most 200 characters")
        return JobOptions.from_dict(fields)
    except ValueError as exc:
        raise ApiError(
            422,
            "invalid_option",
            f"{exc}; page_size is one of {[p.value for p in PageSize]}, "
            f"detail one of {[d.value for d in Detail]}",
        ) from None


@serve.deployment
@serve.ingress(api)
class Ingress:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.blobs = open_blobs(settings.blob_url, s3_endpoint_url=settings.s3_endpoint_url)
        self.coordinator = get_or_create_coordinator(settings)
        # A replica is ready once the coordinator answers (its store is migrated).
        ray.get(self.coordinator.ping.remote(), timeout=COORDINATOR_START_TIMEOUT)

    # -- submission --------------------------------------------------------------
    @api.post("/jobs", status_code=202, openapi_extra=SUBMIT_BODY)
    async def submit(self, request: Request) -> JSONResponse:
        """Submit a photo (multipart `image`) or a prompt (JSON or form `prompt`)."""
        fields, upload = await self._read_submission(request)
        options = _options(fields)
        job_id = str(uuid.uuid4())
        new = NewJob(
            id=job_id,
            kind=Kind.IMAGE if upload is not None else Kind.TEXT,
            options=options,
            idempotency_key=request.headers.get("idempotency-key"),
            max_attempts=self.settings.max_attempts,
        )
        if upload is not None:
            new.input_key = artifact_key(job_id, INPUT_NAME)
            # Off the event loop: with S3 this is a network round trip of up to 20 MiB.
            await asyncio.to_thread(
                self.blobs.put, new.input_key, upload, "application/octet-stream"
            )
        else:
            new.prompt = self._prompt(fields.get("prompt"))
        job, created = await self.coordinator.submit.remote(new)
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
    @api.get("/jobs/{job_id}")
    async def get_job(
        self, job_id: str, wait: float = 0.0, seen: Status | None = None
    ) -> JSONResponse:
        """The job. With `wait=S`, answer as soon as it changes or ends (long-poll)."""
        if wait > 0:
            job = await self.coordinator.wait.remote(job_id, seen, min(wait, MAX_WAIT_SECONDS))
        else:
            job = await self.coordinator.get.remote(job_id)
        return JSONResponse(self._public(self._found(job, job_id)))

    @api.get("/jobs/{job_id}/attempts")
    async def get_attempts(self, job_id: str) -> JSONResponse:
        """The attempts ledger: attempt, worker, node, started, finished, outcome."""
        self._found(await self.coordinator.get.remote(job_id), job_id)
        attempts = await self.coordinator.attempts.remote(job_id)
        return JSONResponse({"job_id": job_id, "attempts": [a.to_public() for a in attempts]})

    @api.get("/jobs/{job_id}/artifacts/{name}", response_model=None)
    async def get_artifact(self, job_id: str, name: str) -> Response:
        """`edge.png` or `coloring_page.pdf`: the bytes, or a redirect to a presigned URL."""
        if name not in ARTIFACT_NAMES:
            raise ApiError(404, "unknown_artifact", f"artifacts are {', '.join(ARTIFACT_NAMES)}")
        job = self._found(await self.coordinator.get.remote(job_id), job_id)
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

    @api.post("/jobs/{job_id}/cancel")
    async def cancel(self, job_id: str) -> JSONResponse:
        """Cancel a queued or running job (a running attempt's late result is fenced off)."""
        job = self._found(await self.coordinator.cancel.remote(job_id), job_id)
        return JSONResponse(self._public(job))

    @api.get("/jobs")
    async def list_jobs(self, status: Status | None = None, limit: int = 50) -> JSONResponse:
        """Jobs, newest first."""
        if not 1 <= limit <= 500:
            raise ApiError(422, "invalid_limit", "limit must be between 1 and 500")
        jobs = await self.coordinator.list_jobs.remote(status=status, limit=limit)
        return JSONResponse({"jobs": [self._public(j) for j in jobs]})

    @api.get("/stats")
    async def stats(self) -> JSONResponse:
        """Queue depth, jobs by status, pool size."""
        return JSONResponse(await self.coordinator.stats.remote())

    @api.get("/healthz")
    async def healthz(self) -> JSONResponse:
        """200 when the coordinator answers."""
        epoch = await self.coordinator.ping.remote()
        return JSONResponse({"ok": True, "coordinator": epoch})

    # -- helpers -----------------------------------------------------------------
    @staticmethod
    def _found(job: Job | None, job_id: str) -> Job:
        if job is None:
            raise ApiError(404, "job_not_found", f"no job {job_id}")
        return job

    def _public(self, job: Job) -> dict[str, Any]:
        out = job.to_public()
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
    log.info("scribble-ray settings: %s", settings.public())
    return Ingress.options(
        num_replicas=replicas,
        ray_actor_options={"num_cpus": settings.ingress_num_cpus},
    ).bind(settings)
