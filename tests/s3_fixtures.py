"""A real S3 API on loopback (moto's server mode) for boto3, and fresh buckets in it.

The server runs in a thread of the test process; Ray workers reach it over
127.0.0.1 like any S3 endpoint. Credentials are the dummies of AWS_TEST_ENV, set
here for the test process and in tests/conftest.py's runtime env for Ray workers.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tests.conftest import AWS_TEST_ENV


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str

    def client(self) -> Any:
        return boto3.client("s3", endpoint_url=self.endpoint_url)

    def new_bucket(self) -> str:
        name = f"scribble-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str) -> list[str]:
        """Every object in the bucket, whatever its prefix."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]

    def versions(self, bucket: str) -> list[str]:
        """Keys of every stored version and delete marker: duplicates would show here."""
        resp = self.client().list_object_versions(Bucket=bucket)
        return [v["Key"] for v in resp.get("Versions", []) + resp.get("DeleteMarkers", [])]

    def pending_uploads(self, bucket: str) -> int:
        """Unfinished multipart uploads: stray parts that cost money and list nowhere else."""
        return len(self.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []))


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    with pytest.MonkeyPatch.context() as env:
        for name, value in AWS_TEST_ENV.items():
            env.setenv(name, value)
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield S3Server(f"http://{host}:{port}")
        finally:
            server.stop()
