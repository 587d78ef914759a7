"""Coordinator dispatch with a no-op pipeline: a burst and a steady rate, SQLite and PostgreSQL.

    .venv/bin/python benchmarks/dispatch.py                      # 5,000 burst + 100/s for 60 s
    .venv/bin/python benchmarks/dispatch.py --quick              # 500 burst + 100/s for 10 s
    .venv/bin/python benchmarks/dispatch.py --stores postgres --profile

The real Coordinator actor (ray.init(address="local")) with a pool of --pool pipeline
workers running a no-op pipeline (stages="benchmarks.plugins:noop_stages": the claim,
the actor call and the worker's fenced result write, nothing else); --pipeline thin
runs the real PNG, PDF and artifact stages on a tiny page instead. Each contender
runs with every --jobs-per-call value (jobs claimed per statement and handed over
per actor call). Per store:

  store-only  the ceiling of the serialized dispatch loop without Ray: one thread
              draining a pre-loaded queue with JobStore.claim_many(k) + succeed_many.
  burst       --burst jobs committed to the store in one transaction while the
              coordinator idles, then one wake-up: drain rate (claims/s, first to last
              start) and completion rate (jobs/s, the wake-up to the last result).
  steady      Coordinator.submit at --rate jobs/s for --seconds: pickup latency
              (jobs.started_at - jobs.created_at, both the database clock) and, end
              to end, the driver's send to the work's own start (its log line).

Targets: pickup p50 <= 5 ms and p99 <= 50 ms at 100 jobs/s; >= 1,000 jobs/s with
PostgreSQL. --profile samples the coordinator process with py-spy during the burst.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from math import nan
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout
from benchmarks.common import (
    RESULTS,
    ExecLog,
    latency_summary,
    machine,
    median,
    pg_schema,
    ray_init,
    table,
    write_result,
)
from benchmarks.plugins import EXEC_DIR_ENV, exec_log_path
from scribble_ray.jobs import JobOptions, Kind, NewJob
from scribble_ray.store import JobStore, open_store
from scribble_ray.store.base import Success

TARGET_P50_MS, TARGET_P99_MS, TARGET_RATE = 5.0, 50.0, 1000.0


def new_job(i: int) -> NewJob:
    return NewJob(kind=Kind.TEXT, options=JobOptions(title=f"n{i}"), prompt="bench")


def bulk_insert(store: JobStore, news: list[NewJob]) -> None:
    """Many jobs in one transaction (what JobStore.create does, once per job)."""
    with store.transaction() as tx:
        for new in news:
            tx.run(
                "insert_job",
                id=new.id,
                kind=new.kind.value,
                max_attempts=new.max_attempts,
                options=store._json(new.options.to_dict()),
                owner=new.owner,
                lane=new.lane.value,
                prompt=new.prompt,
                input_key=None,
                idempotency_key=None,
                source_job_id=None,
                trace_id=new.trace_id,
            )


@contextmanager
def store_url(kind: str) -> Iterator[str]:
    if kind == "postgres":
        with pg_schema("bench_dispatch") as url:
            yield url
    else:
        folder = tempfile.mkdtemp(prefix="bench-sqlite-")
        try:
            yield f"sqlite:///{folder}/jobs.db"
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def timings(store: JobStore) -> list[tuple[float, float | None, float | None]]:
    """(created, started, finished) per job, as epoch seconds from the database clock."""
    with store.transaction() as tx:
        rows = tx.run("list_jobs", owner=None, status=None, before=None, limit=10**7)

    def ts(v: Any) -> float | None:
        return None if v is None else (v.timestamp() if hasattr(v, "timestamp") else float(v))

    return [(ts(r["created_at"]), ts(r["started_at"]), ts(r["finished_at"])) for r in rows]  # type: ignore[misc]


def attempt_rows(url: str) -> list[tuple[str, float, float | None]]:
    """(worker, started, finished) per attempt, epoch seconds (a separate connection)."""
    sql = "SELECT worker, started_at, finished_at FROM attempts"
    if url.startswith("sqlite:///"):
        import sqlite3

        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
            return [(w, float(s), None if f is None else float(f)) for w, s, f in conn.execute(sql)]
    import psycopg

    with psycopg.connect(url) as conn:
        return [
            (w, s.timestamp(), None if f is None else f.timestamp())
            for w, s, f in conn.execute(sql).fetchall()
        ]


def cycle_breakdown(attempts: list[tuple[str, float, float | None]]) -> dict[str, float]:
    """Per pipeline slot: run = claim to result written (worker side, incl. the actor
    call); gap = result written to the slot's next claim (result back to the
    coordinator, its bookkeeping, the next claim). cycle = run + gap per job."""
    by_worker: dict[str, list[tuple[float, float | None]]] = {}
    for w, s, f in attempts:
        by_worker.setdefault(w, []).append((s, f))
    runs, gaps = [], []
    for rows in by_worker.values():
        rows.sort()
        for (s, f), (s2, _) in itertools.pairwise(rows):
            if f is not None:
                runs.append(f - s)
                gaps.append(s2 - f)
    return {
        "slots": float(len(by_worker)),
        "run_ms_p50": 1000 * median(runs),
        "gap_ms_p50": 1000 * median(gaps),
    }


def wait_final(store: JobStore, n: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        by = store.counts()["by_status"]
        if by["succeeded"] + by["failed"] + by["cancelled"] >= n:
            return True
        time.sleep(0.25)
    return False


# -- store-only ceiling ----------------------------------------------------------------
def store_only(kind: str, n: int, per_claim: int) -> dict[str, Any]:
    with store_url(kind) as url:
        store = open_store(url)
        bulk_insert(store, [new_job(i) for i in range(n)])
        claims: list[float] = []
        succeeds: list[float] = []
        done = 0
        t0 = time.perf_counter()
        while True:
            a = time.perf_counter()
            jobs = store.claim_many("bench", "bench", 60.0, per_claim)
            b = time.perf_counter()
            if not jobs:
                break
            claims.append(b - a)
            # As a worker's group commit does for jobs that end together.
            store.succeed_many([Success(job.id, job.attempt, {}, {}) for job in jobs])
            succeeds.append(time.perf_counter() - b)
            done += len(jobs)
        wall = time.perf_counter() - t0
        store.close()
    return {
        "jobs": done,
        "jobs_per_s": done / wall,
        "claim_ms_p50": 1000 * median(claims),
        "succeed_ms_p50": 1000 * median(succeeds),  # per call (k jobs)
    }


# -- the coordinator ---------------------------------------------------------------------
@contextmanager
def coordinator(
    url: str, pool: int, jobs_per_call: int, pipeline: str
) -> Iterator[tuple[Any, Path]]:
    """The coordinator actor and the file its no-op work logs each execution to."""
    import ray

    from scribble_ray.coordinator import get_or_create_coordinator
    from scribble_ray.settings import Settings

    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    log = exec_log_path(namespace)
    assert log is not None, "main() sets the execution log folder before ray_init"
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as data:
        settings = Settings.resolve(
            {
                "data_dir": data,
                "store_url": url,
                "renderer": "benchmarks.plugins:noop",
                "namespace": namespace,
                "pool_min": pool,
                "pool_max": pool,
                "jobs_per_call": jobs_per_call,
                "stages": "benchmarks.plugins:noop_stages" if pipeline == "noop" else "",
                "pipeline_num_cpus": 0.1,
                "max_submissions_per_minute": 10**8,
                "max_queued_per_owner": 10**8,
            },
            env={},
        )
        actor = get_or_create_coordinator(settings)
        ray.get(actor.ping.remote(), timeout=300)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            slots = ray.get(actor.workers.remote())
            if len(slots) >= pool and all(s["node"] for s in slots):
                break
            time.sleep(0.2)
        try:
            yield actor, log
        finally:
            ray.kill(actor, no_restart=True)
            time.sleep(1.0)  # its pipeline workers go with it


def _pid(actor: Any) -> int:
    import os

    import ray

    return int(ray.get(actor.__ray_call__.remote(lambda self: os.getpid())))


def burst(kind: str, n: int, k: int, args: argparse.Namespace, profile: bool) -> dict[str, Any]:
    with store_url(kind) as url:
        store = open_store(url)
        with coordinator(url, args.pool, k, args.pipeline) as (actor, _):
            spy: subprocess.Popen[bytes] | None = None
            svg = RESULTS / f"dispatch-profile-{kind}.txt"
            svg.parent.mkdir(parents=True, exist_ok=True)
            if profile:
                exe = shutil.which("py-spy") or str(Path(sys.prefix, "bin", "py-spy"))
                cmd = [
                    exe,
                    "record",
                    "-p",
                    str(_pid(actor)),
                    "-o",
                    str(svg),
                    "-f",
                    "raw",
                    "-r",
                    "200",
                ]
                spy = subprocess.Popen(
                    [*cmd, "--nonblocking"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                time.sleep(1.0)
            bulk_insert(store, [new_job(i) for i in range(n)])
            woke = time.time()  # the same clock as the database's timestamps (one host)
            actor.submit_many.remote([])  # one wake-up (PostgreSQL's NOTIFY also wakes it)
            ok = wait_final(store, n, args.timeout)
            if spy is not None:
                spy.send_signal(2)  # SIGINT: py-spy writes collapsed stacks and exits
                with contextlib.suppress(subprocess.TimeoutExpired):
                    spy.wait(60)
        rows = timings(store)
        # Per-slot run/gap only mean something with one job per call: a batch's jobs
        # all start (are claimed) at once.
        cycle = cycle_breakdown(attempt_rows(url)) if k == 1 else {}
        store.close()
    started = sorted(s for _, s, _ in rows if s is not None)
    finished = [f for _, _, f in rows if f is not None]
    drain = (len(started) - 1) / (started[-1] - started[0]) if len(started) > 1 else float("nan")
    # From the wake-up, not the first insert: inserting the burst takes seconds itself.
    done = len(finished) / (max(finished) - woke) if finished else float("nan")
    waits = [s - c for c, s, _ in rows if s is not None]
    return {
        "jobs": n,
        "done": len(finished),
        "timed_out": not ok,
        "drain_jobs_per_s": drain,
        "done_jobs_per_s": done,
        "queue_wait": latency_summary(waits),
        **cycle,
        "profile": str(svg) if profile else None,
    }


def steady(kind: str, k: int, args: argparse.Namespace) -> dict[str, Any]:
    import ray

    rate = args.rate
    n = int(rate * args.seconds)
    with store_url(kind) as url:
        store = open_store(url)
        with coordinator(url, args.pool, k, args.pipeline) as (actor, log):
            refs, sent_at = [], []
            start = time.perf_counter()
            for i in range(n):  # open loop: each submission at its own time
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                sent_at.append(time.time())
                refs.append(actor.submit.remote(new_job(i)))
            sent = time.perf_counter() - start
            submitted = [job.id for job, _ in ray.get(refs)]
            ok = wait_final(store, n, args.timeout)
        rows = timings(store)
        store.close()
    pickups = [max(0.0, s - c) for c, s, _ in rows if s is not None]
    # From the driver's send to the work's own start (its execution-log line): the
    # submit call, the insert, the claim and the actor call to the worker, end to end.
    first = ExecLog.read(log).first_start()
    send_to_work = [
        first[job_id].timestamp() - t
        for job_id, t in zip(submitted, sent_at, strict=True)
        if job_id in first
    ]
    created = [c for c, _, _ in rows]
    return {
        "jobs": n,
        "offered_rate": rate,
        "achieved_rate": n / sent,
        "submitted_span_s": max(created) - min(created),
        "timed_out": not ok,
        "pickup": latency_summary(pickups),
        "pickup_s": pickups,
        "send_to_work": latency_summary(send_to_work),
    }


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.epilog = "\n".join(__doc__.splitlines()[1:])
    p.add_argument("--stores", nargs="+", choices=["sqlite", "postgres"], default=None)
    p.add_argument("--burst", type=int, default=5000, help="jobs in the burst (5,000)")
    p.add_argument("--rate", type=float, default=100.0, help="steady jobs/s (100)")
    p.add_argument("--seconds", type=float, default=60.0, help="steady duration (60)")
    p.add_argument("--pool", type=int, default=4, help="pipeline workers (4)")
    p.add_argument(
        "--jobs-per-call", type=int, nargs="+", default=[1, 16], help="claimed per call (1 16)"
    )
    p.add_argument("--pipeline", choices=["noop", "thin"], default="noop")
    p.add_argument("--store-only", type=int, default=2000, help="jobs for the ceiling; 0: skip")
    p.add_argument("--phases", nargs="+", choices=["store-only", "burst", "steady"], default=None)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--timeout", type=float, default=900.0)
    p.add_argument("--profile", action="store_true", help="py-spy the coordinator (burst)")
    p.add_argument("--quick", action="store_true", help="500 burst, 10 s steady, 1 repeat")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    args.stores = args.stores or ["sqlite", "postgres"]
    args.phases = args.phases or ["store-only", "burst", "steady"]
    if args.quick:
        args.burst, args.seconds, args.store_only, args.repeats = 500, 10.0, 300, 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    before = machine()
    exec_dir = Path(tempfile.mkdtemp(prefix="bench-execs-"))
    os.environ[EXEC_DIR_ENV] = str(exec_dir)  # inherited by Ray's workers
    ray_init(num_cpus=16)
    contenders = [(kind, k) for kind in args.stores for k in args.jobs_per_call]
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        f"{kind} k={k}": {"store-only": [], "burst": [], "steady": []} for kind, k in contenders
    }
    for rep in range(args.repeats):
        for kind, k in contenders:
            name, tag = f"{kind} k={k}", f"rep {rep + 1} {kind} k={k}"
            if "store-only" in args.phases and args.store_only:
                r = store_only(kind, args.store_only, k)
                runs[name]["store-only"].append(r)
                print(f"{tag} store-only: {r['jobs_per_s']:.0f} jobs/s", flush=True)
            if "burst" in args.phases:
                r = burst(kind, args.burst, k, args, args.profile and rep == 0)
                runs[name]["burst"].append(r)
                print(
                    f"{tag} burst: drain {r['drain_jobs_per_s']:.0f}/s, "
                    f"done {r['done_jobs_per_s']:.0f}/s",
                    flush=True,
                )
            if "steady" in args.phases:
                r = steady(kind, k, args)
                runs[name]["steady"].append(r)
                print(
                    f"{tag} steady: p50 {r['pickup']['p50_ms']:.1f} ms, "
                    f"p99 {r['pickup']['p99_ms']:.1f} ms",
                    flush=True,
                )
    import ray

    ray.shutdown()
    shutil.rmtree(exec_dir, ignore_errors=True)
    after = machine()

    summary: dict[str, dict[str, float]] = {}
    for name, phases in runs.items():
        so, bu, st = phases["store-only"], phases["burst"], phases["steady"]
        summary[name] = {
            "store_only_jobs_per_s": median([r["jobs_per_s"] for r in so]),
            "claim_ms_p50": median([r["claim_ms_p50"] for r in so]),
            "succeed_ms_p50": median([r["succeed_ms_p50"] for r in so]),
            "burst_drain_jobs_per_s": median([r["drain_jobs_per_s"] for r in bu]),
            "burst_done_jobs_per_s": median([r["done_jobs_per_s"] for r in bu]),
            "burst_run_ms_p50": median([r.get("run_ms_p50", nan) for r in bu]),
            "burst_gap_ms_p50": median([r.get("gap_ms_p50", nan) for r in bu]),
            "steady_p50_ms": median([r["pickup"]["p50_ms"] for r in st]),
            "steady_p95_ms": median([r["pickup"]["p95_ms"] for r in st]),
            "steady_p99_ms": median([r["pickup"]["p99_ms"] for r in st]),
            "steady_achieved_rate": median([r["achieved_rate"] for r in st]),
            "send_to_work_p50_ms": median([r["send_to_work"]["p50_ms"] for r in st]),
            "send_to_work_p99_ms": median([r["send_to_work"]["p99_ms"] for r in st]),
        }
    headers = [
        "store, jobs per call",
        "claim+succeed only /s",
        "claim ms",
        "burst drain /s",
        "burst done /s",
        "slot run ms",
        "slot gap ms",
        f"p50 ms @{args.rate:g}/s",
        "p95 ms",
        "p99 ms",
        "send to work p50 ms",
        "p99 ms",
    ]
    rows = [
        [
            name,
            s["store_only_jobs_per_s"],
            s["claim_ms_p50"],
            s["burst_drain_jobs_per_s"],
            s["burst_done_jobs_per_s"],
            s["burst_run_ms_p50"],
            s["burst_gap_ms_p50"],
            s["steady_p50_ms"],
            s["steady_p95_ms"],
            s["steady_p99_ms"],
            s["send_to_work_p50_ms"],
            s["send_to_work_p99_ms"],
        ]
        for name, s in summary.items()
    ]
    print()
    print(
        f"{args.pipeline} pipeline, pool {args.pool}; burst {args.burst}; steady {args.rate:g}/s "
        f"for {args.seconds:g} s; medians of {args.repeats} run(s)"
    )
    print(
        f"machine: {before['nproc']} CPUs, load average {before['loadavg'][0]:.1f} before, "
        f"{after['loadavg'][0]:.1f} after"
    )
    print(table(headers, rows))
    for name, s in summary.items():
        verdicts = []
        if s["steady_p50_ms"] == s["steady_p50_ms"]:  # measured (not NaN)
            verdicts.append(
                f"p50 {'meets' if s['steady_p50_ms'] <= TARGET_P50_MS else 'MISSES'} 5 ms"
            )
            verdicts.append(
                f"p99 {'meets' if s['steady_p99_ms'] <= TARGET_P99_MS else 'MISSES'} 50 ms"
            )
        done = s["burst_done_jobs_per_s"]
        if name.startswith("postgres") and done == done:
            # Completion rate (insert to last result), not claims: a batch is claimed
            # long before its last job runs.
            verdicts.append(f"dispatch {'meets' if done >= TARGET_RATE else 'MISSES'} 1,000 jobs/s")
        print(f"{name}: " + (", ".join(verdicts) or "no target measured"))
    report = {
        "benchmark": "dispatch",
        "params": {k: v for k, v in vars(args).items() if k != "out"},
        "machine_before": before,
        "machine_after": after,
        "summary": summary,
        "runs": runs,
    }
    name = "dispatch-quick" if args.quick else "dispatch"
    print(f"wrote {write_result(name, report, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
