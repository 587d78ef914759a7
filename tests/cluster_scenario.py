"""scribble-ray on a real three-node Ray cluster, run in a process of its own.

`ray.cluster_utils.Cluster` starts a head and two worker nodes (separate raylets on
this machine). That cannot share a process with the test session's `ray.init`, so
tests/test_cluster.py runs `python -m tests.cluster_scenario ... --out FILE` and
checks the JSON written to FILE:

1. the preflight refuses the embedded defaults (SQLite, a local folder) here;
2. the service starts on PostgreSQL + S3 and JOBS jobs are submitted;
3. once a long job runs on a worker node (not the coordinator's), that node is
   killed outright, mid-run;
4. every job is waited for, and the store's ledger is reported.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import ray
from ray import serve
from ray.cluster_utils import Cluster

from scribble_ray.app import AppArgs, build_app
from scribble_ray.coordinator import COORDINATOR_NAME
from scribble_ray.store import open_store
from tests.conftest import AWS_TEST_ENV, ROOT, free_port
from tests.test_exactly_once import PNG

JOBS = 60
LONG_JOBS = 6  # first in the queue, long enough to be caught running when the node dies
LONG, SHORT = "sleep:4", "sleep:0.3"
HEAD_CPUS, WORKER_CPUS = 2, 1
NAMESPACE = "cluster-scenario"
# Learn of a dead node in ~3 s instead of Ray's default ~15 s; the lease would requeue
# its jobs anyway, this only makes the run shorter. The lease is long enough that a busy
# machine does not expire healthy attempts: every retry is one the lost node caused.
FAST_NODE_DEATH = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}
TOKEN = "cluster-scenario-token-0001"
SERVICE = {
    "renderer": "tests.fakes:scripted",
    "pool_min": 3,
    "pool_max": 6,
    "pipeline_num_cpus": 0.5,
    "lease_seconds": 8.0,
    "max_attempts": 3,
    "ingress_replicas": 2,
    # A cluster refuses the open (no-token) mode.
    "api_tokens": f"cluster={TOKEN}",
    "max_submissions_per_minute": 10_000,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store-url", required=True)
    parser.add_argument("--blob-url", required=True)
    parser.add_argument("--s3-endpoint-url", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": HEAD_CPUS,
            "include_dashboard": False,
            "_system_config": FAST_NODE_DEATH,
        },
    )
    workers = [cluster.add_node(num_cpus=WORKER_CPUS) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(
        address=cluster.address,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), **AWS_TEST_ENV}},
    )
    try:
        result: dict[str, Any] = {
            "nodes": {
                "head": cluster.head_node.node_id,
                "workers": [w.node_id for w in workers],
            },
            "preflight": preflight_refusals(args.store_url),
        }
        result.update(run(cluster, workers, args))
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))


def preflight_refusals(postgres_url: str) -> dict[str, str]:
    """build_app on this cluster with one-machine settings: the error, or '' if accepted."""
    data_dir = tempfile.mkdtemp(prefix="scribble-preflight-")
    cases = {"defaults": {}, "local_folder": {"store_url": postgres_url}}
    refusals = {}
    for name, args in cases.items():
        try:
            build_app(AppArgs(data_dir=data_dir, namespace=f"refused-{name}", **args))
            refusals[name] = ""
        except ValueError as exc:
            refusals[name] = str(exc)
    return refusals


def run(cluster: Cluster, workers: list[Any], args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    # One HTTP proxy: every node of this cluster shares 127.0.0.1, so proxies on every
    # node would all want the same port.
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
    started = time.monotonic()
    app_args = AppArgs(
        data_dir=tempfile.mkdtemp(prefix="scribble-cluster-"),
        namespace=NAMESPACE,
        store_url=args.store_url,
        blob_url=args.blob_url,
        s3_endpoint_url=args.s3_endpoint_url,
        **SERVICE,
    )
    serve.run(build_app(app_args), name="scribble-ray", route_prefix="/")
    service_start_s = time.monotonic() - started

    http = httpx.Client(
        base_url=f"http://127.0.0.1:{port}",
        timeout=60,
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    titles = [LONG] * LONG_JOBS + [SHORT] * (JOBS - LONG_JOBS)
    started = time.monotonic()
    ids = [submit(http, title, i) for i, title in enumerate(titles[:LONG_JOBS])]
    with ThreadPoolExecutor(8) as pool:
        ids += pool.map(lambda i: submit(http, titles[i], i), range(LONG_JOBS, JOBS))

    coordinator = ray.get_actor(COORDINATOR_NAME, namespace=NAMESPACE)
    coordinator_node = actor_node(COORDINATOR_NAME)
    by_id = {w.node_id: w for w in workers}
    removable = set(by_id) - {coordinator_node}
    victim_job, victim_node = running_on(http, ids[:LONG_JOBS], removable)
    pool_before = ray.get(coordinator.workers.remote())
    cluster.remove_node(by_id[victim_node], allow_graceful=False)  # a crash, not a drain
    removed_at = time.monotonic() - started

    with ThreadPoolExecutor(16) as pool:
        final = list(pool.map(lambda job_id: wait_final(http, job_id), ids))
    run_s = time.monotonic() - started
    pool_after = ray.get(coordinator.workers.remote())

    store = open_store(args.store_url, migrate=False)
    jobs = {
        job["id"]: {
            "status": job["status"],
            "attempt": job["attempt"],
            "attempts": [
                {"node": a.node, "worker": a.worker, "outcome": a.outcome, "error": a.error}
                for a in store.attempts(job["id"])
            ],
        }
        for job in final
    }
    return {
        "coordinator_node": coordinator_node,
        "victim": {"node": victim_node, "job": victim_job, "removed_at_s": removed_at},
        "pool_before_removal": pool_before,
        "pool_after": pool_after,
        "jobs": jobs,
        "overlapping_attempts": store.overlapping_attempts(),
        "counts": store.counts(),
        "seconds": {"service_start": service_start_s, "run": run_s},
    }


def actor_node(name: str) -> str:
    """The node a named actor lives on. Ray's GCS actor table is a developer API; the
    public state API would need the dashboard, which this cluster leaves out."""
    # This cluster is private to the scenario: one actor has the name.
    for info in ray._private.state.actors(actor_state_name="ALIVE").values():
        if info["Name"] == name:
            return str(info["Address"]["NodeID"])
    raise RuntimeError(f"actor {name} is not alive")


def running_on(http: httpx.Client, job_ids: list[str], nodes: set[str]) -> tuple[str, str]:
    """The first of `job_ids` seen running on one of `nodes` (long-polls, no sleeps)."""
    for job_id in job_ids:
        job = request(http, "GET", f"/jobs/{job_id}")
        while job["status"] == "queued":
            job = request(http, "GET", f"/jobs/{job_id}", params={"wait": 30, "seen": "queued"})
        if job["status"] != "running":
            continue
        node = request(http, "GET", f"/jobs/{job_id}/attempts")["attempts"][-1]["node"]
        if node in nodes:
            return job_id, node
    raise RuntimeError(f"none of the long jobs ran on the worker nodes {sorted(nodes)}")


def submit(http: httpx.Client, title: str, index: int) -> str:
    # The idempotency key makes a retried submission safe: never a second job.
    job = request(
        http,
        "POST",
        "/jobs",
        files={"image": ("t.png", PNG)},
        data={"title": title},
        headers={"Idempotency-Key": f"cluster-{index}-{uuid.uuid4().hex[:6]}"},
    )
    return str(job["id"])


def wait_final(http: httpx.Client, job_id: str) -> dict[str, Any]:
    job = request(http, "GET", f"/jobs/{job_id}")
    while job["status"] not in {"succeeded", "failed", "cancelled"}:
        params = {"wait": 30, "seen": job["status"]}
        job = request(http, "GET", f"/jobs/{job_id}", params=params)
    return job


def request(http: httpx.Client, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    """One HTTP call, repeated while the ingress is briefly unavailable: a replica on
    the removed node dies with its in-flight requests until Serve replaces it."""
    tries = 40
    for attempt in range(tries):
        try:
            resp = http.request(method, path, **kwargs)
        except httpx.TransportError:
            resp = None
        if resp is not None and resp.status_code < 500:
            resp.raise_for_status()
            body: dict[str, Any] = resp.json()
            return body
        time.sleep(min(2.0, 0.1 * 2**attempt))  # backoff between retries of a failed call
    raise RuntimeError(f"{method} {path}: the ingress kept failing after {tries} tries")


if __name__ == "__main__":
    main()
