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
    namespace: str = "scribble_ray"  # Ray namespace of the coordinator and pool
    pool_min: int = 1
    pool_max: int = 2
    pipeline_num_cpus: float = 0.5
    coordinator_num_cpus: float = 0.1
    ingress_num_cpus: float = 0.1
    max_attempts: int = 3
    lease_seconds: float = 15.0
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 60.0
    fallback_poll_seconds: float = 5.0
    job_timeout_seconds: float = 300.0
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 80_000_000
    max_prompt_chars: int = 2000

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
        )

    def _validated(self) -> Settings:
        if not 1 <= self.pool_min <= self.pool_max:
            raise ValueError(
                f"need 1 <= pool_min <= pool_max, got {self.pool_min} and {self.pool_max}"
            )
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
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
