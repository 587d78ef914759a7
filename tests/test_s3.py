"""Artifacts in S3: the S3BlobStore against a real S3 API, then the whole service on it."""

from __future__ import annotations

import os
import pickle
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import ray

from scribble_ray.blobs import open_blobs
from scribble_ray.blobs.s3 import S3BlobStore, parse_s3_url
from scribble_ray.jobs import ARTIFACT_NAMES, INPUT_NAME
from scribble_ray.store import open_store
from tests import s3_fixtures
from tests.conftest import DATA, Service, start_service, stop_service
from tests.s3_fixtures import S3Server
from tests.test_exactly_once import FAST_RETRY, assert_no_overlap, ledger, submit

s3_server = s3_fixtures.s3_server
PREFIX = "scribble"


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    return s3_server.new_bucket()


@pytest.fixture
def blobs(s3_server: S3Server, bucket: str) -> S3BlobStore:
    return S3BlobStore(f"s3://{bucket}/{PREFIX}", endpoint_url=s3_server.endpoint_url)


# -- the store -----------------------------------------------------------------------


def test_put_get_under_the_prefix_with_content_type(
    blobs: S3BlobStore, s3_server: S3Server, bucket: str
) -> None:
    blobs.put("jobs/1/edge.png", b"png bytes", "image/png")
    assert blobs.get("jobs/1/edge.png") == b"png bytes"
    assert blobs.exists("jobs/1/edge.png")
    assert s3_server.keys(bucket) == [f"{PREFIX}/jobs/1/edge.png"]
    head = s3_server.client().head_object(Bucket=bucket, Key=f"{PREFIX}/jobs/1/edge.png")
    assert head["ContentType"] == "image/png"


def test_missing_objects(blobs: S3BlobStore) -> None:
    with pytest.raises(KeyError):
        blobs.get("jobs/none/edge.png")
    with pytest.raises(KeyError):
        blobs.open_stream("jobs/none/edge.png")  # at once, not at the first chunk
    assert not blobs.exists("jobs/none/edge.png")
    blobs.delete("jobs/none/edge.png")  # deleting what is not there is not an error


def test_delete(blobs: S3BlobStore) -> None:
    blobs.put("jobs/1/input", b"x", "application/octet-stream")
    blobs.delete("jobs/1/input")
    assert not blobs.exists("jobs/1/input")
    assert blobs.list() == []


def test_download_streams_in_chunks(blobs: S3BlobStore) -> None:
    data = os.urandom(300_000)
    blobs.put("jobs/1/coloring_page.pdf", data, "application/pdf")
    chunks = list(blobs.open_stream("jobs/1/coloring_page.pdf", chunk_size=1 << 16))
    assert len(chunks) == 5
    assert b"".join(chunks) == data


def test_presigned_url_serves_the_bytes(blobs: S3BlobStore) -> None:
    blobs.put("jobs/1/edge.png", b"the page", "image/png")
    url = blobs.url_for("jobs/1/edge.png", expires_s=60)
    assert url is not None
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Expires"] == ["60"]
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    resp = httpx.get(url)  # no credentials: the signature is the permission
    assert resp.status_code == 200
    assert resp.content == b"the page"
    assert resp.headers["content-type"] == "image/png"
    assert resp.headers["content-disposition"] == 'inline; filename="edge.png"'
    with pytest.raises(ValueError, match="expires_s"):
        blobs.url_for("jobs/1/edge.png", expires_s=8 * 24 * 3600)


def test_retried_write_overwrites_in_place(
    blobs: S3BlobStore, s3_server: S3Server, bucket: str
) -> None:
    big = os.urandom(9 * 1024 * 1024)  # where boto3's upload_file would go multipart
    blobs.put("jobs/1/edge.png", big, "image/png")
    blobs.put("jobs/1/edge.png", b"second attempt", "image/png")
    assert blobs.get("jobs/1/edge.png") == b"second attempt"
    assert s3_server.keys(bucket) == [f"{PREFIX}/jobs/1/edge.png"]
    assert s3_server.versions(bucket) == [f"{PREFIX}/jobs/1/edge.png"]
    assert s3_server.pending_uploads(bucket) == 0


def test_list_is_relative_to_the_prefix_and_pages(
    blobs: S3BlobStore, s3_server: S3Server, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = s3_server.client()
    client.put_object(Bucket=bucket, Key="other-app/jobs/1/input", Body=b"not ours")
    client.put_object(Bucket=bucket, Key=f"{PREFIX}-old/jobs/1/input", Body=b"not ours")
    keys = [f"jobs/{i}/input" for i in range(5)]
    for key in keys:
        blobs.put(key, b"x", "application/octet-stream")
    # Pages of 2 instead of S3's 1000: a listing that read only the first page fails here.
    pages = []
    get_paginator = blobs.client.get_paginator

    def small_pages(name: str) -> Any:
        paginator = get_paginator(name)
        paginate = paginator.paginate

        def counted(**kwargs: Any) -> Iterator[dict[str, Any]]:
            for page in paginate(PaginationConfig={"PageSize": 2}, **kwargs):
                pages.append(page)
                yield page

        paginator.paginate = counted
        return paginator

    monkeypatch.setattr(blobs.client, "get_paginator", small_pages)
    assert blobs.list() == keys
    assert len(pages) == 3
    assert blobs.list("jobs/3/") == ["jobs/3/input"]


def test_keys_are_checked(blobs: S3BlobStore) -> None:
    for bad in ("../escape", "/abs", "a//b", "jobs/../x"):
        with pytest.raises(ValueError, match="invalid blob key"):
            blobs.put(bad, b"x", "application/octet-stream")


def test_url_parsing() -> None:
    assert parse_s3_url("s3://bucket/a/b/") == ("bucket", "a/b")
    assert parse_s3_url("s3://bucket") == ("bucket", "")
    for bad in ("s3:///prefix", "file:///x", "s3://bucket/../x"):
        with pytest.raises(ValueError):
            parse_s3_url(bad)


def test_missing_bucket_is_refused_at_start_up(s3_server: S3Server) -> None:
    with pytest.raises(ValueError, match=r"bucket 'no-such-bucket' does not exist at http"):
        S3BlobStore("s3://no-such-bucket/x", endpoint_url=s3_server.endpoint_url)


def test_missing_credentials_are_refused_at_start_up(
    s3_server: S3Server, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(ValueError, match="no AWS credentials"):
        S3BlobStore(f"s3://{bucket}/x", endpoint_url=s3_server.endpoint_url)


def test_open_blobs_dispatches_s3_urls(s3_server: S3Server, bucket: str) -> None:
    store = open_blobs(f"s3://{bucket}/p", s3_endpoint_url=s3_server.endpoint_url)
    assert isinstance(store, S3BlobStore)
    assert (store.bucket, store.prefix) == (bucket, "p")


# -- the service on S3 ---------------------------------------------------------------


KILLED = 3  # jobs whose worker is killed mid-job: retried once, then succeed
CRASHING = 2  # jobs that kill their worker on every attempt: fail after max_attempts
JOBS = 100


@dataclass(frozen=True)
class S3Service:
    svc: Service
    bucket: str
    s3: S3Server

    def key(self, job_id: str, name: str) -> str:
        return f"{PREFIX}/jobs/{job_id}/{name}"


@pytest.fixture(scope="module")
def s3_service(
    serve_url: str, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[S3Service]:
    bucket = s3_server.new_bucket()
    svc = start_service(
        serve_url,
        tmp_path_factory.mktemp("s3"),
        blob_url=f"s3://{bucket}/{PREFIX}",
        s3_endpoint_url=s3_server.endpoint_url,
        pool_min=2,
        pool_max=4,
        # Ray reports the killed and crashed workers; a long lease keeps a busy machine
        # from expiring healthy attempts, so every retry here is one the test caused.
        **{**FAST_RETRY, "lease_seconds": 10.0},
        max_submissions_per_minute=10_000,  # one owner submits 100 jobs at once here
    )
    yield S3Service(svc, bucket, s3_server)
    stop_service(svc)


def running_attempt(svc: Service, job_id: str) -> dict[str, Any]:
    """Wait (long-poll) until the job's first attempt runs; its open ledger row."""
    job = svc.http.get(f"/jobs/{job_id}").json()
    while job["status"] == "queued":
        job = svc.http.get(f"/jobs/{job_id}", params={"wait": 30, "seen": "queued"}).json()
    assert job["status"] == "running", job
    [attempt] = ledger(svc, job_id)
    assert attempt["outcome"] is None
    return attempt


def kill_first_attempt(svc: Service, job_id: str) -> None:
    worker = running_attempt(svc, job_id)["worker"]
    ray.kill(ray.get_actor(worker, namespace=svc.namespace), no_restart=True)


def test_upload_is_stored_once_and_workers_get_only_its_key(s3_service: S3Service) -> None:
    svc = s3_service.svc
    photo = max((p for p in DATA.iterdir() if p.suffix == ".png"), key=lambda p: p.stat().st_size)
    data = photo.read_bytes()
    headers = {"Idempotency-Key": f"once-{uuid.uuid4()}"}
    first = svc.http.post("/jobs", files={"image": (photo.name, data)}, headers=headers)
    again = svc.http.post("/jobs", files={"image": (photo.name, data)}, headers=headers)
    assert (first.status_code, again.status_code) == (202, 200), again.text
    job_id = first.json()["id"]
    assert again.json()["id"] == job_id
    assert svc.wait_final(job_id)["status"] == "succeeded"

    client = s3_service.s3.client()
    stored = client.get_object(Bucket=s3_service.bucket, Key=s3_service.key(job_id, INPUT_NAME))
    assert stored["Body"].read() == data
    # The repeat's upload was removed: one input object per job, and no orphans.
    jobs = open_store(svc.store_url, migrate=False).list_jobs(limit=500)
    inputs = [k for k in s3_service.s3.keys(s3_service.bucket) if k.endswith("/" + INPUT_NAME)]
    assert sorted(inputs) == sorted(s3_service.key(j.id, INPUT_NAME) for j in jobs)

    # What a pipeline worker is handed is the key, never the bytes.
    job = ray.get(svc.coordinator().get.remote(job_id))
    assert job.input_key == f"jobs/{job_id}/{INPUT_NAME}"
    assert len(pickle.dumps(job)) < 4096 < len(data)


def test_artifact_download_redirects_to_a_presigned_url(s3_service: S3Service) -> None:
    svc = s3_service.svc
    job = svc.wait_final(submit(svc, "fast"))
    assert job["status"] == "succeeded"
    client = s3_service.s3.client()
    for name, content_type, magic in (
        ("edge.png", "image/png", b"\x89PNG"),
        ("coloring_page.pdf", "application/pdf", b"%PDF"),
    ):
        resp = svc.http.get(job["artifacts"][name], follow_redirects=False)
        assert resp.status_code == 307, resp.text
        location = resp.headers["location"]
        bucket_url = f"{s3_service.s3.endpoint_url}/{s3_service.bucket}"
        assert location.startswith(f"{bucket_url}/{s3_service.key(job['id'], name)}?")
        direct = httpx.get(location)
        assert direct.status_code == 200
        assert direct.headers["content-type"] == content_type
        assert direct.content.startswith(magic)
        key = s3_service.key(job["id"], name)
        assert direct.content == client.get_object(Bucket=s3_service.bucket, Key=key)["Body"].read()


def test_hundred_jobs_with_failures_leave_exactly_their_objects(s3_service: S3Service) -> None:
    svc, s3, bucket = s3_service.svc, s3_service.s3, s3_service.bucket
    # The jobs to be killed go first, so they are claimed first; each one's worker is
    # killed as soon as it runs, while the rest of the queue is submitted and worked off.
    killed = [submit(svc, "sleep:4") for _ in range(KILLED)]
    titles = ["crash"] * CRASHING + ["fast"] * (JOBS - KILLED - CRASHING)
    with ThreadPoolExecutor(KILLED) as killers, ThreadPoolExecutor(8) as pool:
        kills = [killers.submit(kill_first_attempt, svc, job_id) for job_id in killed]
        rest = list(pool.map(lambda title: submit(svc, title), titles))
        for kill in kills:
            kill.result()
    crashing, fine = rest[:CRASHING], rest[CRASHING:]

    with ThreadPoolExecutor(16) as pool:
        jobs = {j["id"]: j for j in pool.map(svc.wait_final, killed + rest)}
    for job_id in killed:
        assert (jobs[job_id]["status"], jobs[job_id]["attempt"]) == ("succeeded", 2)
        attempts = ledger(svc, job_id)
        assert [a["outcome"] for a in attempts] == ["lost", "succeeded"]
        assert_no_overlap(attempts)
    for job_id in crashing:
        assert (jobs[job_id]["status"], jobs[job_id]["attempt"]) == ("failed", 3)
    for job_id in fine:
        assert (jobs[job_id]["status"], jobs[job_id]["attempt"]) == ("succeeded", 1), ledger(
            svc, job_id
        )
    store = open_store(svc.store_url, migrate=False)
    assert store.overlapping_attempts() == 0

    # The bucket holds exactly each job's objects (this module's earlier jobs included):
    # its input, plus both artifacts once it succeeded. No strays, no second versions.
    expected = set()
    for job in store.list_jobs(limit=500):
        assert job.input_key == f"jobs/{job.id}/{INPUT_NAME}"
        expected.add(s3_service.key(job.id, INPUT_NAME))
        if job.status == "succeeded":
            expected.update(s3_service.key(job.id, name) for name in ARTIFACT_NAMES)
    keys = s3.keys(bucket)
    assert sorted(keys) == sorted(expected)
    assert sorted(s3.versions(bucket)) == sorted(expected)
    assert s3.pending_uploads(bucket) == 0
    per_job = Counter(key.split("/")[2] for key in keys)
    assert Counter(per_job[job_id] for job_id in jobs) == Counter({3: JOBS - CRASHING, 1: CRASHING})

    # Every artifact carries its content type (browsers render presigned URLs by it).
    types = {"edge.png": "image/png", "coloring_page.pdf": "application/pdf"}
    client = s3.client()
    with ThreadPoolExecutor(8) as pool:
        heads = pool.map(
            lambda key: (key, client.head_object(Bucket=bucket, Key=key)["ContentType"]),
            [k for k in keys if not k.endswith("/" + INPUT_NAME)],
        )
        for key, content_type in heads:
            assert content_type == types[key.rsplit("/", 1)[1]], key
