"""Blob stores, chosen by URL: file://PATH (embedded default) or s3://BUCKET/PREFIX."""

from __future__ import annotations

from scribble_ray.blobs.base import BlobStore, check_key


def open_blobs(url: str, *, s3_endpoint_url: str | None = None) -> BlobStore:
    if url.startswith("file://"):
        from scribble_ray.blobs.local import LocalBlobStore

        return LocalBlobStore(url.removeprefix("file://"))
    if url.startswith("s3://"):
        from scribble_ray.blobs.s3 import S3BlobStore

        return S3BlobStore(url, endpoint_url=s3_endpoint_url)
    raise ValueError(f"unsupported blob URL {url!r}: use file://PATH or s3://BUCKET/PREFIX")


__all__ = ["BlobStore", "check_key", "open_blobs"]
