"""Artifacts in S3 (or an S3-compatible server): s3://BUCKET/PREFIX, through boto3.

Credentials come from the standard AWS chain only (environment, shared files,
instance or task role): nothing here reads or stores a key. Every object is one
PutObject under a deterministic key, so a retried write replaces the object in
place: S3 has no partial objects and no leftover multipart uploads to clean up.
(With versioning on, S3 keeps each overwritten version: leave it off for this bucket,
or expire noncurrent versions with a lifecycle rule.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from scribble_ray.blobs.base import check_key

MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # the SigV4 limit
_MISSING = {"404", "NoSuchKey", "NotFound"}


def parse_s3_url(url: str) -> tuple[str, str]:
    """s3://bucket/some/prefix -> ("bucket", "some/prefix"); the prefix may be empty."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"blob URL must look like s3://BUCKET/PREFIX, got {url!r}")
    prefix = parts.path.strip("/")
    if prefix:
        check_key(prefix)
    return parts.netloc, prefix


class S3BlobStore:
    def __init__(self, url: str, endpoint_url: str | None = None) -> None:
        self.bucket, self.prefix = parse_s3_url(url)
        self.endpoint_url = endpoint_url
        config = Config(
            signature_version="s3v4",  # presigned URLs in every region
            retries={"mode": "standard", "max_attempts": 5},
            connect_timeout=5,
            read_timeout=60,
            # Ingress replicas upload from several threads at once; the default of 10
            # pooled connections would make them queue for a socket.
            max_pool_connections=32,
            # S3-compatible servers (MinIO, moto, Ceph) are addressed by IP or one host
            # name: bucket-in-the-path works with all of them; AWS keeps its default.
            s3={"addressing_style": "path" if endpoint_url else "auto"},
        )
        # A session of our own: boto3's default session is shared and not thread-safe.
        self.client: Any = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url, config=config
        )
        self._check_bucket()

    def _check_bucket(self) -> None:
        """Fail at start-up, with the reason, rather than on the first job."""
        where = f"at {self.endpoint_url}" if self.endpoint_url else "on AWS"
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except NoCredentialsError:
            raise ValueError(
                f"no AWS credentials for S3 bucket {self.bucket!r}: provide them through the "
                "standard AWS chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws, or an "
                "instance role) on every node"
            ) from None
        except ClientError as exc:
            code = _code(exc)
            if code in _MISSING | {"NoSuchBucket"}:
                raise ValueError(
                    f"S3 bucket {self.bucket!r} does not exist {where}: scribble-ray does "
                    "not create buckets; create it (with the retention you want) and restart"
                ) from None
            if code in {"403", "AccessDenied", "Forbidden"}:
                raise ValueError(
                    f"access to S3 bucket {self.bucket!r} {where} is denied: the AWS "
                    "credentials in use need s3:ListBucket, s3:GetObject, s3:PutObject and "
                    "s3:DeleteObject on it"
                ) from None
            raise
        except BotoCoreError as exc:
            raise ConnectionError(f"cannot reach S3 bucket {self.bucket!r} {where}: {exc}") from exc

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes, content_type: str) -> None:
        # One PutObject (never a multipart upload: uploads are capped far below 5 GB):
        # atomic for readers, and a retry overwrites the same key instead of adding one.
        self.client.put_object(
            Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=content_type
        )

    def _get_object(self, key: str) -> dict[str, Any]:
        try:
            response: dict[str, Any] = self.client.get_object(
                Bucket=self.bucket, Key=self._key(key)
            )
        except ClientError as exc:
            if _code(exc) in _MISSING:
                raise KeyError(key) from None
            raise
        return response

    def get(self, key: str) -> bytes:
        body = self._get_object(key)["Body"]
        try:
            data: bytes = body.read()
        finally:
            body.close()
        return data

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))  # absent: no error

    def list(self, prefix: str = "") -> list[str]:
        base = f"{self.prefix}/" if self.prefix else ""
        keys: list[str] = []
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=base + prefix
        )
        for page in pages:
            keys.extend(obj["Key"].removeprefix(base) for obj in page.get("Contents", []))
        return sorted(keys)

    def open_stream(self, key: str, chunk_size: int = 1 << 16) -> Iterator[bytes]:
        body = self._get_object(key)["Body"]  # KeyError now, not at the first chunk

        def chunks() -> Iterator[bytes]:
            try:
                yield from body.iter_chunks(chunk_size)
            finally:
                body.close()

        return chunks()

    def url_for(self, key: str, expires_s: int = 300) -> str | None:
        """A presigned GET URL: clients download straight from S3, not through the ingress.

        Signing is local (no request). A URL signed with temporary credentials (an
        instance role) stops working when they expire, even before `expires_s`.
        """
        if not 1 <= expires_s <= MAX_PRESIGN_SECONDS:
            raise ValueError(f"expires_s must be 1..{MAX_PRESIGN_SECONDS}, got {expires_s}")
        name = key.rsplit("/", 1)[-1]
        url: str = self.client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": self._key(key),
                # The same header the ingress sends when it streams the bytes itself.
                "ResponseContentDisposition": f'inline; filename="{name}"',
            },
            ExpiresIn=expires_s,
        )
        return url


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
