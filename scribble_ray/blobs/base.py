"""The BlobStore: where uploads and artifacts live, under deterministic keys."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Protocol

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")


def check_key(key: str) -> str:
    """Keys are relative, plain paths: no '..', no absolute paths, no odd characters."""
    if not _KEY.match(key) or ".." in key.split("/") or "//" in key:
        raise ValueError(f"invalid blob key {key!r}")
    return key


class BlobStore(Protocol):
    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Write (or overwrite: effects are idempotent) one object."""

    def get(self, key: str) -> bytes:
        """Read one object; KeyError when it does not exist."""

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def list(self, prefix: str = "") -> list[str]: ...

    def open_stream(self, key: str, chunk_size: int = 1 << 16) -> Iterator[bytes]:
        """Stream an object in chunks; KeyError when it does not exist."""

    def url_for(self, key: str, expires_s: int = 300) -> str | None:
        """A time-limited direct URL (S3 presign), or None to stream through the ingress."""
