"""End to end: real photos through the local renderer, pool sizes 1 and 2.

    .venv/bin/python benchmarks/e2e.py                 # 100 jobs per pool size
    .venv/bin/python benchmarks/e2e.py --quick         # 12 jobs per pool size

The photos of tests/data, in turn, are stored as job inputs and submitted in one
Coordinator.submit_many call to a coordinator running the local OpenCV renderer
(decode, line art, PNG, PDF, artifacts written to a local folder). Reported per
pool size: jobs/s (first insert to last finish) and the job time (started_at to
finished_at) p50/p95, medians of --repeats runs.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout
from benchmarks.common import ROOT, latency_summary, machine, median, ray_init, table, write_result
from scribble_ray.blobs import open_blobs
from scribble_ray.jobs import INPUT_NAME, JobOptions, Kind, NewJob, artifact_key
from scribble_ray.settings import Settings
from scribble_ray.store import open_store

PHOTOS = sorted(p for p in (ROOT / "tests" / "data").iterdir() if p.suffix in {".png", ".jpg"})


def run(jobs: int, pool: int, timeout: float) -> dict[str, Any]:
    import ray

    from scribble_ray.coordinator import get_or_create_coordinator

    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as data:
        settings = Settings.resolve(
            {
                "data_dir": data,
                "namespace": f"bench-{uuid.uuid4().hex[:8]}",
                "pool_min": pool,
                "pool_max": pool,
                "max_submissions_per_minute": 10**8,
                "max_queued_per_owner": 10**8,
            },
            env={},
        )
        store = open_store(settings.store_url)
        blobs = open_blobs(settings.blob_url)
        actor = get_or_create_coordinator(settings)
        ray.get(actor.ping.remote(), timeout=300)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            slots = ray.get(actor.workers.remote())
            if len(slots) >= pool and all(s["node"] for s in slots):
                break
            time.sleep(0.2)
        news = []
        for i in range(jobs):
            new = NewJob(kind=Kind.IMAGE, options=JobOptions())
            new.input_key = artifact_key(new.id, INPUT_NAME)
            blobs.put(new.input_key, PHOTOS[i % len(PHOTOS)].read_bytes(), "image/png")
            news.append(new)
        ray.get(actor.submit_many.remote(news))
        while time.monotonic() < deadline + timeout:
            by = store.counts()["by_status"]
            if by["succeeded"] + by["failed"] >= jobs:
                break
            time.sleep(0.5)
        ray.kill(actor, no_restart=True)
        rows = store.list_jobs(limit=jobs + 10)
        store.close()
    ok = [j for j in rows if j.status.value == "succeeded"]
    times = [(j.finished_at - j.started_at).total_seconds() for j in ok]  # type: ignore[operator]
    wall = (max(j.finished_at for j in ok) - min(j.created_at for j in rows)).total_seconds()  # type: ignore[type-var, operator]
    return {
        "pool": pool,
        "jobs": jobs,
        "succeeded": len(ok),
        "failed": sum(1 for j in rows if j.status.value == "failed"),
        "jobs_per_s": len(ok) / wall,
        "wall_s": wall,
        "job_time": latency_summary(times),
        "render_s_p50": median([j.timings.get("render", float("nan")) for j in ok]),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.epilog = "\n".join(__doc__.splitlines()[1:])
    p.add_argument("--jobs", type=int, default=100)
    p.add_argument("--pools", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--timeout", type=float, default=900.0)
    p.add_argument("--quick", action="store_true", help="12 jobs, 1 repeat")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.jobs, args.repeats = 12, 1

    before = machine()
    ray_init(num_cpus=16)
    runs: list[dict[str, Any]] = []
    for rep in range(args.repeats):
        for pool in args.pools:
            r = run(args.jobs, pool, args.timeout)
            runs.append(r)
            print(
                f"rep {rep + 1} pool {pool}: {r['succeeded']}/{r['jobs']} ok, "
                f"{r['jobs_per_s']:.2f} jobs/s, p50 {r['job_time']['p50_ms']:.0f} ms",
                flush=True,
            )
    import ray

    with contextlib.suppress(Exception):
        ray.shutdown()
    after = machine()
    summary = []
    for pool in args.pools:
        mine = [r for r in runs if r["pool"] == pool]
        summary.append(
            {
                "pool": pool,
                "succeeded": median([r["succeeded"] for r in mine]),
                "jobs_per_s": median([r["jobs_per_s"] for r in mine]),
                "job_p50_ms": median([r["job_time"]["p50_ms"] for r in mine]),
                "job_p95_ms": median([r["job_time"]["p95_ms"] for r in mine]),
                "render_p50_ms": 1000 * median([r["render_s_p50"] for r in mine]),
                "wall_s": median([r["wall_s"] for r in mine]),
            }
        )
    base = summary[0]["jobs_per_s"]
    rows = [
        [
            str(s["pool"]),
            f"{s['succeeded']:.0f}/{args.jobs}",
            s["jobs_per_s"],
            f"{s['jobs_per_s'] / base:.2f}x",
            s["job_p50_ms"],
            s["job_p95_ms"],
            s["render_p50_ms"],
            s["wall_s"],
        ]
        for s in summary
    ]
    print()
    print(f"{args.jobs} photo jobs (tests/data), local renderer; medians of {args.repeats} run(s)")
    print(
        f"machine: {before['nproc']} CPUs, load average {before['loadavg'][0]:.1f} before, "
        f"{after['loadavg'][0]:.1f} after"
    )
    headers = ["pool", "ok", "jobs/s", "vs pool 1", "job p50 ms", "job p95 ms", "render p50 ms"]
    print(table([*headers, "wall s"], rows))
    report = {
        "benchmark": "e2e",
        "params": {k: v for k, v in vars(args).items() if k != "out"},
        "machine_before": before,
        "machine_after": after,
        "summary": summary,
        "runs": runs,
    }
    name = "e2e-quick" if args.quick else "e2e"
    print(f"wrote {write_result(name, report, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
