"""The Gemini renderer: a photo or a prompt -> line art through google-genai, paid for once.

For every job:

1. the content-addressed cache in the BlobStore is asked first
   (`cache/gemini/<sha256 of model, instructions, input bytes, options>`): a retry
   after a crash, or an identical resubmission, makes no call;
2. each HTTP call runs under a permit of the CallGate (in a cluster: the
   coordinator's cluster-wide limits), handed back with the server's Retry-After
   when the answer was a 429, so the whole fleet slows down, not one worker;
3. 429, 5xx, timeouts and dropped connections are retried in place, at most
   `gemini_tries` times, then left to the job system (TransientJobError); a
   safety block, an answer without an image, or any other 4xx fails the job with
   a reason a user can read (PermanentJobError: retrying cannot help);
4. the image is cached the moment it arrives, before anything else can fail:
   the only crash that can still cost a second call is one during the call itself.

The SDK's own retries are switched off (one HTTP request per permit). The API key
is read from GEMINI_API_KEY when the client is made: it is not a setting, not
kept on this object, never logged.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import io
import json
import logging
import os
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import numpy as np
from google import genai
from google.genai import errors, types
from PIL import Image

from scribble_ray.blobs import BlobStore, open_blobs
from scribble_ray.jobs import (
    Detail,
    Job,
    Kind,
    PermanentJobError,
    TransientJobError,
    backoff_seconds,
)
from scribble_ray.limits import CallGate, LocalGate, gemini_limiter, permit_holder
from scribble_ray.render.cleanup import clean_lineart
from scribble_ray.render.images import ImageRejected, decode_image, sniff_image_type
from scribble_ray.settings import Settings

log = logging.getLogger(__name__)

API_KEY_ENV = "GEMINI_API_KEY"
CACHE_PREFIX = "cache/gemini/"
CACHE_VERSION = 1  # bump when the meaning of a cached answer changes
PHOTO_SIDE = 1536  # long side of the photo we send: plenty for line art, a bounded upload
MAX_RETRY_AFTER = 300.0  # seconds; a longer Retry-After is capped (the job system takes over)

STYLE = (
    "Style: clean, closed black outlines on a pure white background; no shading, no gray "
    "tones, no color, no filled black areas, no text, no border."
)
TASKS = {
    Kind.IMAGE: "Turn this photo into a page of a children's coloring book.",
    Kind.TEXT: "Draw a page of a children's coloring book showing: {prompt}.",
}
DETAILS = {
    Detail.LOW: "Use few, bold lines and large, simple shapes.",
    Detail.MEDIUM: "Use clear lines and a moderate amount of detail.",
    Detail.HIGH: "Use fine lines and plenty of detail, with many small areas to color.",
}
# The SDK sends with httpx2 when it is installed (google-genai >= 2), else httpx;
# their transport errors (timeouts, refused or dropped connections) are not wrapped.
_HTTP = [importlib.import_module(m) for m in ("httpx", "httpx2") if importlib.util.find_spec(m)]
TIMEOUT_ERRORS: tuple[type[Exception], ...] = tuple(m.TimeoutException for m in _HTTP)
TRANSPORT_ERRORS: tuple[type[Exception], ...] = tuple(m.TransportError for m in _HTTP)
# Finish reasons that mean "the model would not draw this": the user must change the input.
BLOCKED_FINISH = frozenset(
    {
        "SAFETY",
        "PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "RECITATION",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)


@dataclass(frozen=True)
class _Request:
    """What one render asks Gemini for, and the content address of the answer."""

    job_id: str
    holder: str  # of the call permits: this attempt of the job
    key: str
    instructions: str
    options: dict[str, Any]  # generation options: response modalities, aspect ratio
    source: bytes | None  # the uploaded photo, for image jobs


@dataclass(frozen=True)
class _Retry:
    """A try that may succeed if repeated: the error code and message if it never does."""

    code: str
    message: str
    throttled_for: float | None = None  # a 429's Retry-After: the gate holds everyone back


class GeminiRenderer:
    name = "gemini"
    supports_text = True

    def __init__(
        self, settings: Settings, *, gate: CallGate | None = None, blobs: BlobStore | None = None
    ) -> None:
        self.settings = settings
        self._gate = gate
        self._blobs = blobs or open_blobs(
            settings.blob_url, s3_endpoint_url=settings.s3_endpoint_url
        )
        self._client: genai.Client | None = None
        self._usage: dict[str, dict[str, float]] = {}

    def render(self, job: Job, source: bytes | None) -> np.ndarray:
        usage = self._usage[job.id] = {"gemini_calls": 0.0, "gemini_cache_hit": 0.0}
        request = self._request(job, source)
        image = self._cached(request.key)
        if image is not None:
            usage["gemini_cache_hit"] = 1.0
        else:
            image = self._generate(request, usage)
        return self._to_lineart(request.key, image)

    def usage(self, job: Job) -> dict[str, float]:
        """Calls made, cache hit (0/1) and tokens of the last render of `job`, for its timings."""
        return self._usage.pop(job.id, {})

    # -- the request -------------------------------------------------------------
    def _request(self, job: Job, source: bytes | None) -> _Request:
        if job.kind is Kind.TEXT:
            if not job.prompt:
                raise PermanentJobError("a text job needs a prompt", code="missing_input")
            task = TASKS[Kind.TEXT].format(prompt=job.prompt.strip().rstrip("."))
            options: dict[str, Any] = {"response_modalities": ["IMAGE"], "aspect_ratio": "3:4"}
            source = None
        else:
            if source is None:
                raise PermanentJobError("an image job needs its photo", code="missing_input")
            task = TASKS[Kind.IMAGE]
            options = {"response_modalities": ["IMAGE"]}  # the photo's own aspect ratio
        style = self.settings.gemini_prompt or STYLE
        instructions = f"{task} {style} {DETAILS[job.options.detail]}"
        key = cache_key(self.settings.gemini_model, instructions, source, options)
        holder = permit_holder(job.id, job.attempt)
        return _Request(job.id, holder, key, instructions, options, source)

    def _contents(self, request: _Request) -> list[Any]:
        if request.source is None:
            return [request.instructions]
        # Decoded and re-encoded: any accepted upload format becomes one Gemini takes,
        # EXIF (location!) is dropped, and the upload stays small.
        rgb = decode_image(request.source, max_pixels=self.settings.max_pixels, max_side=PHOTO_SIDE)
        out = io.BytesIO()
        Image.fromarray(rgb).save(out, "JPEG", quality=90)
        photo = types.Part.from_bytes(data=out.getvalue(), mime_type="image/jpeg")
        return [photo, request.instructions]

    # -- the calls ---------------------------------------------------------------
    def _generate(self, request: _Request, usage: dict[str, float]) -> bytes:
        contents = self._contents(request)
        tries = self.settings.gemini_tries
        for n in range(1, tries + 1):
            result = self._call_once(request, contents, usage)
            if isinstance(result, bytes):
                return result
            log.warning(
                "job %s: Gemini call %d/%d failed: %s", request.job_id, n, tries, result.message
            )
            if n == tries:
                raise TransientJobError(
                    f"Gemini failed {tries} tries in a row (last: {result.message})",
                    code=result.code,
                )
            if result.throttled_for is None:  # after a 429 the gate does the waiting
                delay = backoff_seconds(
                    n, self.settings.gemini_retry_base_seconds, self.settings.retry_max_seconds
                )
                time.sleep(delay)
        raise ValueError("gemini_tries must be at least 1")

    def _call_once(
        self, request: _Request, contents: list[Any], usage: dict[str, float]
    ) -> bytes | _Retry:
        """One HTTP request under a permit: the image, or why to try again."""
        client = self._client_or_new()
        gate = self._gate_or_default()
        gate.acquire(request.holder)
        throttled_for: float | None = None
        try:
            usage["gemini_calls"] += 1
            try:
                response = client.models.generate_content(
                    model=self.settings.gemini_model,
                    contents=contents,
                    config=_config(request.options),
                )
            except errors.APIError as exc:
                if exc.code == 429:
                    throttled_for = retry_after_seconds(exc) or backoff_seconds(
                        int(usage["gemini_calls"]), self.settings.gemini_retry_base_seconds
                    )
                    return _Retry(
                        "gemini_rate_limited",
                        f"rate limited (429), asked to wait {throttled_for:.1f} s",
                        throttled_for,
                    )
                if exc.code == 408 or exc.code >= 500:
                    return _Retry("gemini_unavailable", f"server error {exc.code} {exc.status}")
                raise PermanentJobError(
                    f"Gemini rejected the request ({exc.code} {exc.status}): {exc.message}",
                    code="gemini_rejected",
                ) from None
            except TIMEOUT_ERRORS:
                timeout = self.settings.gemini_timeout_seconds
                return _Retry("gemini_timeout", f"no answer within {timeout:g} s")
            except TRANSPORT_ERRORS as exc:
                return _Retry("gemini_unreachable", f"connection failed ({type(exc).__name__})")
            tokens = response.usage_metadata.total_token_count if response.usage_metadata else None
            if tokens:
                usage["gemini_tokens"] = usage.get("gemini_tokens", 0.0) + tokens
            image = extract_image(response)
            self._cache_put(request.key, image)  # at once: from here on a crash never pays again
            return image
        finally:
            gate.release(request.holder, throttled_for=throttled_for)

    def _client_or_new(self) -> genai.Client:
        if self._client is None:
            api_key = os.environ.get(API_KEY_ENV, "").strip()
            if not api_key:
                raise PermanentJobError(
                    f"the Gemini renderer has no API key: set {API_KEY_ENV} in the environment "
                    "of every Ray node (see README, 'The Gemini renderer')",
                    code="renderer_unavailable",
                )
            self._client = genai.Client(
                api_key=api_key,
                vertexai=False,  # whatever GOOGLE_GENAI_USE_VERTEXAI says
                http_options=types.HttpOptions(
                    base_url=self.settings.gemini_base_url,
                    api_version="v1beta",  # image output and image_config live here
                    timeout=int(self.settings.gemini_timeout_seconds * 1000),
                    # One request per permit: our loop retries, under the limits.
                    retry_options=types.HttpRetryOptions(attempts=1),
                ),
            )
        return self._client

    def _gate_or_default(self) -> CallGate:
        if self._gate is None:  # outside a cluster: limits for this process alone
            self._gate = LocalGate(gemini_limiter(self.settings))
        return self._gate

    # -- the cache and the page --------------------------------------------------
    def _cached(self, key: str) -> bytes | None:
        try:
            return self._blobs.get(key)
        except KeyError:
            return None

    def _cache_put(self, key: str, image: bytes) -> None:
        try:
            self._blobs.put(key, image, f"image/{sniff_image_type(image)}")
        except Exception:  # the page can still be made; only a later retry would pay again
            log.warning("could not cache Gemini answer %s", key, exc_info=True)

    def _to_lineart(self, key: str, image: bytes) -> np.ndarray:
        try:
            rgb = decode_image(image, max_pixels=self.settings.max_pixels)
        except ImageRejected as exc:
            self._blobs.delete(key)  # never serve a damaged answer again; a new call may be fine
            raise TransientJobError(
                f"Gemini sent an image that cannot be read ({exc})", code="gemini_bad_image"
            ) from None
        page = clean_lineart(rgb)
        if not (page == 0).any():  # (cached too: the same request draws no call, same end)
            raise PermanentJobError(
                "Gemini drew a blank page; try another photo or prompt", code="no_image"
            )
        return page


def cache_key(model: str, instructions: str, source: bytes | None, options: dict[str, Any]) -> str:
    """Content address of a request: everything that changes Gemini's answer, nothing else
    (a job's title or page size does not, so they share the answer)."""
    source_hash = hashlib.sha256(source).hexdigest() if source is not None else None
    canonical = json.dumps(
        [CACHE_VERSION, model, instructions, source_hash, options], sort_keys=True
    )
    return CACHE_PREFIX + hashlib.sha256(canonical.encode()).hexdigest()


def extract_image(response: types.GenerateContentResponse) -> bytes:
    """The first image of the answer; PermanentJobError with a readable reason if none."""
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason:
        raise PermanentJobError(
            f"Gemini declined this request ({_name(feedback.block_reason)}"
            f"{': ' + feedback.block_reason_message if feedback.block_reason_message else ''}). "
            "Try a different photo or prompt.",
            code="content_blocked",
        )
    candidates = response.candidates or []
    for candidate in candidates:
        for part in (candidate.content.parts if candidate.content else None) or []:
            blob = part.inline_data
            if blob is not None and blob.data and sniff_image_type(blob.data):
                return blob.data
    reasons = sorted({_name(c.finish_reason) for c in candidates if c.finish_reason})
    if BLOCKED_FINISH.intersection(reasons):
        raise PermanentJobError(
            f"Gemini stopped drawing for safety reasons ({', '.join(reasons)}). "
            "Try a different photo or prompt.",
            code="content_blocked",
        )
    said = " ".join(
        part.text.strip()
        for c in candidates
        for part in ((c.content.parts if c.content else None) or [])
        if part.text
    )
    raise PermanentJobError(
        "Gemini answered without an image"
        + (f" (finish reason {', '.join(reasons)})" if reasons else "")
        + (f"; it said: {said[:200]}" if said else ""),
        code="no_image",
    )


def retry_after_seconds(exc: errors.APIError) -> float | None:
    """The wait a 429 asks for: its Retry-After header, else the RetryInfo in its body."""
    headers = getattr(exc.response, "headers", None)
    value = headers.get("retry-after") if headers is not None else None
    seconds: float | None = None
    if value:
        try:
            seconds = float(value)
        except ValueError:
            try:  # the HTTP-date form
                seconds = parsedate_to_datetime(value).timestamp() - time.time()
            except (TypeError, ValueError):
                seconds = None
    if seconds is None:
        seconds = _retry_info(exc.details)
    return None if seconds is None else min(max(0.0, seconds), MAX_RETRY_AFTER)


def _retry_info(details: Any) -> float | None:
    """google.rpc.RetryInfo {"retryDelay": "17s"} from a Google error body."""
    error = details.get("error", details) if isinstance(details, dict) else {}
    for item in error.get("details", []) if isinstance(error, dict) else []:
        if isinstance(item, dict) and str(item.get("@type", "")).endswith("RetryInfo"):
            try:
                return float(str(item.get("retryDelay", "")).removesuffix("s"))
            except ValueError:
                return None
    return None


def _config(options: dict[str, Any]) -> types.GenerateContentConfig:
    aspect = options.get("aspect_ratio")
    return types.GenerateContentConfig(
        response_modalities=options["response_modalities"],
        image_config=types.ImageConfig(aspect_ratio=aspect) if aspect else None,
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )


def _name(value: Any) -> str:
    return str(getattr(value, "value", value))


__all__ = ["GeminiRenderer", "cache_key", "extract_image", "retry_after_seconds"]
