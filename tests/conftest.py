"""Shared fixtures: one Ray instance per test session, services started on demand."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import ray
from ray import serve

from scribble_ray.app import AppArgs, build_app
from scribble_ray.coordinator import COORDINATOR_NAME

ROOT = Path(__file__).parent.parent
DATA = Path(__file__).parent / "data"
PHOTOS = sorted(p for p in DATA.iterdir() if p.suffix in {".png", ".jpg"})
POSTGRES_URL = os.environ.get(
    "SCRIBBLE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@contextmanager
def pg_schema() -> Iterator[str]:
    """A fresh PostgreSQL schema nobody else sees; yields a store URL selecting it.

    The schema name is also the connections' application_name, so a test can find
    (and terminate) exactly its own backends.
    """
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    try:
        yield f"{POSTGRES_URL}?application_name={name}&options=-csearch_path%3D{name}"
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {name} CASCADE")


# Dummy credentials for the moto S3 server of the S3 and cluster tests, never real ones.
# Ray workers get them through the runtime env, so boto3 in actors finds them in the
# standard chain; no instance-metadata lookups leave the machine.
AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    # Logical CPUs above the 2 real cores: actors get fractions, and tests that
    # run several pipeline workers need room to schedule them.
    ray.init(
        address="local",  # always a new cluster, never one another process left running
        num_cpus=8,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), **AWS_TEST_ENV}},
    )
    yield
    ray.shutdown()


@dataclass
class Service:
    """A running scribble-ray application and an HTTP client for it."""

    url: str
    namespace: str
    data_dir: Path
    store_url: str
    http: httpx.Client

    def coordinator(self) -> Any:
        return ray.get_actor(COORDINATOR_NAME, namespace=self.namespace)

    def submit_photo(self, path: Path, **fields: str) -> httpx.Response:
        with path.open("rb") as f:
            return self.http.post("/jobs", files={"image": (path.name, f)}, data=fields)

    def wait_final(self, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """Long-poll until the job is final (one request per status change)."""
        job: dict[str, Any] = self.http.get(f"/jobs/{job_id}").json()
        while job["status"] not in {"succeeded", "failed", "cancelled"}:
            job = self.http.get(
                f"/jobs/{job_id}", params={"wait": 30, "seen": job["status"]}, timeout=timeout
            ).json()
        return job


@pytest.fixture(scope="session")
def serve_url(ray_session: None) -> Iterator[str]:
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


# The service tests flood one owner with hundreds of jobs a minute: per-owner admission
# limits stay out of their way unless a test sets them (tests/test_bad_input.py does).
UNLIMITED = {"max_submissions_per_minute": 1_000_000, "max_queued_per_owner": 1_000_000}


def start_service(serve_url: str, data_dir: Path, **args: Any) -> Service:
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    app_args = AppArgs(data_dir=str(data_dir), namespace=namespace, **{**UNLIMITED, **args})
    serve.run(build_app(app_args), name="scribble-ray", route_prefix="/")
    store_url = args.get("store_url") or f"sqlite:///{data_dir.resolve() / 'jobs.db'}"
    http = httpx.Client(base_url=serve_url, timeout=60)
    return Service(serve_url, namespace, data_dir, store_url, http)


def stop_service(service: Service) -> None:
    service.http.close()
    serve.delete("scribble-ray")
    with contextlib.suppress(ValueError):  # already gone
        ray.kill(service.coordinator(), no_restart=True)  # its pipeline workers go with it


@pytest.fixture(scope="module")
def service(serve_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The application as serve_config.yaml builds it, on a temporary data dir."""
    svc = start_service(serve_url, tmp_path_factory.mktemp("svc"))
    yield svc
    stop_service(svc)
