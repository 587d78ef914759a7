"""One Settings object, resolved once: application args over environment over defaults.

The embedded defaults need no keys and no servers: SQLite under the data dir,
a local artifact folder and the local OpenCV renderer.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from scribble_ray.auth import hash_token_spec

ENV_PREFIX = "SCRIBBLE_"


@dataclass(frozen=True)
class Settings:
    data_dir: str = "./.scribble_ray"
    store_url: str = ""  # default: sqlite:///<data_dir>/jobs.db
    blob_url: str = ""  # default: file://<data_dir>/blobs
    s3_endpoint_url: str | None = None
    renderer: str = "local"  # local | gemini | module:attr of a Renderer factory
    gemini_model: str = "gemini-2.5-flash-image"
    gemini_base_url: str | None = None
    gemini_prompt: str | None = None  # style instructions sent with every request (overrides ours)
    gemini_timeout_seconds: float = 90.0  # one HTTP call; image generation takes 5-30 s
    gemini_tries: int = 4  # HTTP tries per attempt on 429 / 5xx / timeouts
    gemini_retry_base_seconds: float = 1.0  # backoff between those tries (doubling, jittered)
    gemini_max_concurrency: int = 4  # Gemini calls in flight across the cluster
    gemini_max_per_minute: int = 60  # Gemini calls started per minute across the cluster
    namespace: str = "scribble_ray"  # Ray namespace of the coordinator and pool
    pool_min: int = 1
    pool_max: int = 2
    pool_idle_seconds: float = 30.0  # a worker idle this long is stopped (down to pool_min)
    pipeline_num_cpus: float = 0.5
    # Jobs claimed for a pipeline worker at once (one statement, one actor call). 1 keeps
    # every job's wait to one run ahead of it; more pays only for jobs of a few ms.
    jobs_per_call: int = 1
    stages: str = ""  # module:attr of a run_stages replacement (benchmarks: a no-op)
    coordinator_num_cpus: float = 0.1
    ingress_num_cpus: float = 0.1
    # Long-polls and SSE streams each hold a request slot for their whole wait: Serve's
    # default (5 per replica) would let a handful of waiting clients block submissions.
    ingress_max_ongoing_requests: int = 500
    max_attempts: int = 3
    lease_seconds: float = 15.0
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 60.0
    fallback_poll_seconds: float = 5.0
    job_timeout_seconds: float = 300.0
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 80_000_000
    max_prompt_chars: int = 2000
    # Who may call the API (issue #9; see auth.py). Neither set: open mode, owner "local".
    api_tokens_file: str | None = None  # lines `owner sha256hex [admin]`
    api_tokens: str | None = None  # "owner=token,admin:ops=token2": hashed at once, see auth
    max_submissions_per_minute: int = 60  # per owner (token bucket in the coordinator)
    max_queued_per_owner: int = 200  # queued jobs per owner; more get 429
    # OTLP/HTTP collector base URL (e.g. http://127.0.0.1:4318); empty: no tracing at all.
    otlp_endpoint: str = ""

    @classmethod
    def resolve(
        cls, args: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
    ) -> Settings:
        env = os.environ if env is None else env
        known = {f.name: f for f in fields(cls)}
        unknown = set(args or {}) - set(known)
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        for name, f in known.items():
            raw = env.get(ENV_PREFIX + name.upper())
            if args and args.get(name) is not None:
                raw = args[name]
            if raw is not None and raw != "":
                values[name] = _coerce(name, f.type, raw)
        settings = cls(**values)
        return settings._with_derived_defaults()._validated()

    def _with_derived_defaults(self) -> Settings:
        data = Path(self.data_dir).expanduser().resolve()
        return dataclasses.replace(
            self,
            data_dir=str(data),
            store_url=self.store_url or f"sqlite:///{data / 'jobs.db'}",
            blob_url=self.blob_url or f"file://{data / 'blobs'}",
            # Plain tokens never outlive resolution: only their SHA-256 is kept.
            api_tokens=hash_token_spec(self.api_tokens) if self.api_tokens else None,
        )

    def _validated(self) -> Settings:
        if not 1 <= self.pool_min <= self.pool_max:
            raise ValueError(
                f"need 1 <= pool_min <= pool_max, got {self.pool_min} and {self.pool_max}"
            )
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 1 <= self.jobs_per_call <= 256:
            raise ValueError(f"jobs_per_call must be 1..256, got {self.jobs_per_call}")
        if self.lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        if min(self.gemini_tries, self.gemini_max_concurrency, self.gemini_max_per_minute) < 1:
            raise ValueError("gemini_tries, gemini_max_concurrency, gemini_max_per_minute >= 1")
        if min(self.max_submissions_per_minute, self.max_queued_per_owner) < 1:
            raise ValueError("max_submissions_per_minute and max_queued_per_owner must be >= 1")
        if self.otlp_endpoint and not self.otlp_endpoint.startswith(("http://", "https://")):
            raise ValueError(f"otlp_endpoint must be an http(s):// URL, got {self.otlp_endpoint!r}")
        if self.gemini_timeout_seconds <= 0:
            raise ValueError("gemini_timeout_seconds must be positive")
        if not self.store_url.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError(
                f"store_url must be sqlite:///PATH or postgresql://..., got {self.store_url!r}"
            )
        if not self.blob_url.startswith(("file://", "s3://")):
            raise ValueError(
                f"blob_url must be file://PATH or s3://BUCKET/PREFIX, got {self.blob_url!r}"
            )
        return self

    def public(self) -> dict[str, Any]:
        """Settings safe to show: credentials in URLs are masked."""
        out = dataclasses.asdict(self)
        out["store_url"] = _mask_password(self.store_url)
        out["api_tokens"] = f"<{self.api_tokens.count('=')} hashed>" if self.api_tokens else None
        return out


def _coerce(name: str, type_name: Any, raw: Any) -> Any:
    kind = str(type_name)
    try:
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
        return str(raw)
    except (TypeError, ValueError):
        raise ValueError(f"setting {name}: cannot read {raw!r} as {kind}") from None


def _mask_password(url: str) -> str:
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
