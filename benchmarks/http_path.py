"""Submissions per second through Serve (1 and 2 ingress replicas) vs direct Coordinator.submit.

    .venv/bin/python benchmarks/http_path.py                   # 2,000 submissions per arm
    .venv/bin/python benchmarks/http_path.py --quick           # 300 per arm
    .venv/bin/python benchmarks/http_path.py --replicas 1 2 4 --concurrency 32

The application as serve_config.yaml builds it (scribble_ray.app:build_app) on a
loopback port, with the benchmarks.plugins:noop renderer so a text prompt is a
valid job and costs nothing to run. For each replica count, --concurrency clients
POST {"prompt": ...} as JSON until --requests are accepted (202); then, against the
same coordinator and store, the same number of Coordinator.submit calls are made
straight from the driver with the same concurrency. The difference is what the
ingress (HTTP proxy, FastAPI, request parsing, one extra actor hop) adds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout
from benchmarks.common import (
    latency_summary,
    machine,
    median,
    pg_schema,
    ray_init,
    table,
    write_result,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def http_load(url: str, n: int, concurrency: int) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    counter = iter(range(n))

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal errors
        for i in counter:
            start = time.perf_counter()
            resp = await http.post("/jobs", json={"prompt": f"bench {i}"})
            latencies.append(time.perf_counter() - start)
            if resp.status_code != 202:
                errors += 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return {
        "requests": n,
        "errors": errors,
        "per_s": n / wall,
        "latency": latency_summary(latencies),
    }


async def direct_load(actor: Any, n: int, concurrency: int) -> dict[str, Any]:
    from scribble_ray.jobs import JobOptions, Kind, NewJob

    latencies: list[float] = []
    counter = iter(range(n))

    async def client() -> None:
        for i in counter:
            start = time.perf_counter()
            new = NewJob(kind=Kind.TEXT, options=JobOptions(), prompt=f"bench {i}")
            await actor.submit.remote(new)
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    return {"requests": n, "errors": 0, "per_s": n / wall, "latency": latency_summary(latencies)}


def one_app(args: argparse.Namespace, replicas: int, url: str, store_url: str) -> dict[str, Any]:
    import ray
    from ray import serve

    from scribble_ray.app import AppArgs, build_app
    from scribble_ray.coordinator import COORDINATOR_NAME

    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as data:
        app_args = AppArgs(
            data_dir=data,
            store_url=store_url or None,
            namespace=namespace,
            renderer="benchmarks.plugins:noop",
            ingress_replicas=replicas,
            pool_min=1,
            pool_max=1,
            pipeline_num_cpus=0.1,
            max_submissions_per_minute=10**8,
            max_queued_per_owner=10**8,
        )
        serve.run(build_app(app_args), name="scribble-ray", route_prefix="/")
        actor = ray.get_actor(COORDINATOR_NAME, namespace=namespace)
        try:
            httpx.get(f"{url}/healthz", timeout=60).raise_for_status()
            warm = max(20, args.requests // 20)
            asyncio.run(http_load(url, warm, args.concurrency))  # connections, replicas warm
            asyncio.run(direct_load(actor, warm, args.concurrency))
            out: dict[str, Any] = {"replicas": replicas, "http": [], "direct": []}
            for _ in range(args.repeats):  # interleaved: both arms see the same machine
                out["http"].append(asyncio.run(http_load(url, args.requests, args.concurrency)))
                out["direct"].append(
                    asyncio.run(direct_load(actor, args.requests, args.concurrency))
                )
                print(
                    f"replicas {replicas}: http {out['http'][-1]['per_s']:.0f}/s, "
                    f"direct {out['direct'][-1]['per_s']:.0f}/s",
                    flush=True,
                )
        finally:
            serve.delete("scribble-ray")
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.epilog = "\n".join(__doc__.splitlines()[1:])
    p.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    p.add_argument("--requests", type=int, default=2000, help="accepted submissions per arm")
    p.add_argument("--concurrency", type=int, default=16, help="clients in flight")
    p.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="300 submissions, 1 repeat")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.requests, args.repeats = 300, 1

    from ray import serve

    before = machine()
    ray_init(num_cpus=16)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url = f"http://127.0.0.1:{port}"
    results = []
    with contextlib.ExitStack() as stack:
        for replicas in args.replicas:
            store_url = ""
            if args.store == "postgres":
                store_url = stack.enter_context(pg_schema("bench_http"))
            results.append(one_app(args, replicas, url, store_url))
    serve.shutdown()
    import ray

    ray.shutdown()
    after = machine()

    summary = []
    for r in results:
        http_rate = median([x["per_s"] for x in r["http"]])
        direct_rate = median([x["per_s"] for x in r["direct"]])
        summary.append(
            {
                "replicas": r["replicas"],
                "http_per_s": http_rate,
                "http_p50_ms": median([x["latency"]["p50_ms"] for x in r["http"]]),
                "http_p99_ms": median([x["latency"]["p99_ms"] for x in r["http"]]),
                "http_errors": sum(x["errors"] for x in r["http"]),
                "direct_per_s": direct_rate,
                "direct_p50_ms": median([x["latency"]["p50_ms"] for x in r["direct"]]),
                "direct_p99_ms": median([x["latency"]["p99_ms"] for x in r["direct"]]),
                "http_vs_direct": http_rate / direct_rate,
            }
        )
    headers = [
        "ingress replicas",
        "HTTP /s",
        "HTTP p50 ms",
        "HTTP p99 ms",
        "direct /s",
        "direct p50 ms",
        "direct p99 ms",
        "HTTP / direct",
    ]
    rows = [
        [
            str(s["replicas"]),
            s["http_per_s"],
            s["http_p50_ms"],
            s["http_p99_ms"],
            s["direct_per_s"],
            s["direct_p50_ms"],
            s["direct_p99_ms"],
            f"{s['http_vs_direct']:.2f}",
        ]
        for s in summary
    ]
    print()
    print(
        f"{args.requests} submissions per arm, {args.concurrency} in flight, {args.store} store; "
        f"medians of {args.repeats} run(s)"
    )
    print(
        f"machine: {before['nproc']} CPUs, load average {before['loadavg'][0]:.1f} before, "
        f"{after['loadavg'][0]:.1f} after"
    )
    print(table(headers, rows))
    report = {
        "benchmark": "http_path",
        "params": {k: v for k, v in vars(args).items() if k != "out"},
        "machine_before": before,
        "machine_after": after,
        "summary": summary,
        "runs": results,
    }
    name = "http_path-quick" if args.quick else "http_path"
    print(f"wrote {write_result(name, report, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
