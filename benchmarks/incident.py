"""The incident, reproduced: the old polling worker beside scribble-ray, same jobs, same run.

    .venv/bin/python benchmarks/incident.py                 # 200 jobs, 5 s poll, 4 and 8 workers
    .venv/bin/python benchmarks/incident.py --quick         # a smoke run in about a minute
    .venv/bin/python benchmarks/incident.py --poll 0.5 --phase aligned --repeats 3

A burst of --jobs jobs, each --work seconds of fake work, is inserted into a fresh
PostgreSQL schema and run to completion by, in turn:

  baseline      N processes written as the old worker was: every --poll seconds,
                SELECT the oldest queued job, then UPDATE it to running (two
                statements, no lock), work, UPDATE it to succeeded.
  store         N processes each running scribble-ray's claim loop: JobStore.claim
                (one atomic statement), work, JobStore.succeed; an idle loop waits
                for the store's LISTEN/NOTIFY wake-up (1 s fallback).
  procrastinate (a peer, opt-in) N processes of Procrastinate 3's worker, concurrency 1,
                LISTEN/NOTIFY on; the job sleeps --work and logs its execution.
  coordinator   the real Coordinator actor with a pool of N pipeline workers and the
                benchmarks.plugins:noop renderer sleeping --work per job (plus the
                real PNG + PDF stages); jobs inserted into its store wake it.

Every execution is recorded independently of the system under test (a row per
execution for the processes, a line per render for the pipeline workers), so a
duplicate execution is counted even if the system's own bookkeeping missed it.
Reported per contender: duplicate executions, jobs/s over the burst (first insert
to last finish, database clock), pickup latency (first start - insert) p50/p95/p99,
wall time. --phase aligned starts every baseline worker's timer on the same grid
(instances started together, as by one deploy); random gives each a random phase.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import random
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout
from benchmarks.common import (
    RESULTS,
    latency_summary,
    machine,
    median,
    pg_schema,
    ray_init,
    table,
    write_result,
)

CONTENDERS = ("baseline", "store", "coordinator", "procrastinate")
OLD_SCHEMA = """
CREATE TABLE old_jobs (
    id          TEXT PRIMARY KEY,
    status      TEXT NOT NULL DEFAULT 'queued',
    created_at  TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    started_at  TIMESTAMPTZ,
    finished_at TIMESTAMPTZ
);
CREATE INDEX old_jobs_queued ON old_jobs (created_at) WHERE status = 'queued';
"""


# -- the old worker, as it was ---------------------------------------------------------
def log_execution(log: str, job_id: str, started: float, finished: float) -> None:
    """One line per execution, one O_APPEND write (atomic across processes)."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{job_id} {started!r} {finished!r}\n".encode())
    finally:
        os.close(fd)


def read_executions(log: str) -> tuple[Counter[str], dict[str, datetime], list[datetime]]:
    """Executions per job, each job's first start, and every execution's end."""
    lines = [ln.split() for ln in Path(log).read_text().splitlines()] if Path(log).exists() else []
    first: dict[str, datetime] = {}
    ends: list[datetime] = []
    for job_id, start, end in lines:
        s = datetime.fromtimestamp(float(start), UTC)
        first[job_id] = min(first.get(job_id, s), s)
        ends.append(datetime.fromtimestamp(float(end), UTC))
    return Counter(ln[0] for ln in lines), first, ends


def baseline_worker(
    url: str, log: str, index: int, poll: float, offset: float, t0: float, work: float, stop: Any
) -> None:
    """`setInterval(tick, poll)`: SELECT the oldest queued job, then UPDATE it. No lock."""
    with psycopg.connect(url, autocommit=True) as conn:
        while not stop.is_set():
            # the next tick on this worker's grid (a late tick is not made up for)
            now = time.time()
            k = max(0, int((now - t0 - offset) // poll) + 1)
            delay = t0 + offset + k * poll - now
            if stop.wait(max(0.0, delay)):
                return
            row = conn.execute(
                "SELECT id FROM old_jobs WHERE status = 'queued' ORDER BY created_at LIMIT 1"
            ).fetchone()
            if row is None:
                continue
            job_id = row[0]
            conn.execute(
                "UPDATE old_jobs SET status = 'running', started_at = clock_timestamp() "
                "WHERE id = %s",
                (job_id,),
            )
            started = time.time()
            time.sleep(work)
            conn.execute(
                "UPDATE old_jobs SET status = 'succeeded', finished_at = clock_timestamp() "
                "WHERE id = %s",
                (job_id,),
            )
            log_execution(log, job_id, started, time.time())


# -- scribble-ray's claim path, N processes ----------------------------------------------
def store_worker(url: str, log: str, index: int, work: float, stop: Any, ready: Any) -> None:
    """JobStore.claim (one atomic statement) + work + JobStore.succeed, in a loop."""
    from scribble_ray.store import open_store

    name = f"store-{index}"
    store = open_store(url, migrate=False)
    wake = threading.Event()
    stop_listening = threading.Event()
    threading.Thread(
        target=store.listen, args=(wake.set, stop_listening), daemon=True, name="listen"
    ).start()
    ready.release()
    while not stop.is_set():
        wake.clear()
        job = store.claim(name, "bench", 60.0)
        if job is None:
            wake.wait(1.0)
            continue
        started = time.time()
        time.sleep(work)
        store.succeed(job.id, job.attempt, {}, {})
        log_execution(log, job.id, started, time.time())
    stop_listening.set()
    store.close()


# -- a peer: Procrastinate (PostgreSQL task queue), N worker processes -------------------
def _procrastinate_app(url: str, log: str, *, sync: bool) -> Any:
    import procrastinate

    connector = (
        procrastinate.SyncPsycopgConnector(conninfo=url)
        if sync
        else procrastinate.PsycopgConnector(conninfo=url)
    )
    app = procrastinate.App(connector=connector)

    @app.task(name="bench_job", queue="bench")
    def bench_job(job_id: str, work: float) -> None:
        started = time.time()  # the same machine clock as the deferring process
        time.sleep(work)
        log_execution(log, job_id, started, time.time())

    return app


def procrastinate_worker(url: str, log: str, index: int) -> None:
    app = _procrastinate_app(url, log, sync=False)
    # LISTEN/NOTIFY on (its default); one job at a time per process, like the others.
    app.run_worker(queues=["bench"], concurrency=1, name=f"procrastinate-{index}")


# -- one contender, one run --------------------------------------------------------------
@dataclass
class RunResult:
    contender: str
    workers: int
    jobs: int
    done: int
    executions: int
    duplicate_executions: int
    jobs_run_more_than_once: int
    wall_s: float
    jobs_per_s: float
    pickup: dict[str, float]
    pickup_s: list[float] = field(repr=False)
    timed_out: bool = False


def _wait_done(url: str, sql: str, jobs: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            n = conn.execute(sql).fetchone()[0]  # type: ignore[index]
            if n >= jobs:
                return True
            time.sleep(0.2)
    return False


def _result(
    contender: str,
    workers: int,
    jobs: int,
    created: dict[str, datetime],
    first_start: dict[str, datetime],
    finished: list[datetime],
    executions: Counter[str],
    timed_out: bool,
) -> RunResult:
    pickups = [
        max(0.0, (first_start[j] - created[j]).total_seconds()) for j in created if j in first_start
    ]
    start = min(created.values())
    wall = (max(finished) - start).total_seconds() if finished else float("nan")
    done = sum(1 for j in executions if j in created)  # distinct jobs run to the end
    return RunResult(
        contender=contender,
        workers=workers,
        jobs=jobs,
        done=done,
        executions=sum(executions.values()),
        duplicate_executions=sum(n - 1 for n in executions.values() if n > 1),
        jobs_run_more_than_once=sum(1 for n in executions.values() if n > 1),
        wall_s=wall,
        jobs_per_s=done / wall if finished and wall > 0 else float("nan"),
        pickup=latency_summary(pickups),
        pickup_s=pickups,
        timed_out=timed_out,
    )


def run_baseline(args: argparse.Namespace, workers: int, seed: int) -> RunResult:
    ctx = mp.get_context("spawn")
    rng = random.Random(seed)
    with pg_schema("bench_old") as url, tempfile.TemporaryDirectory() as tmp:
        log = str(Path(tmp) / "executions.log")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(OLD_SCHEMA)
        stop = ctx.Event()
        t0 = time.time() + 3.0  # the timers' grid starts once every process is up
        offsets = [
            0.0 if args.phase == "aligned" else rng.uniform(0, args.poll) for _ in range(workers)
        ]
        procs = [
            ctx.Process(
                target=baseline_worker,
                args=(url, log, i, args.poll, offsets[i], t0, args.work, stop),
                daemon=True,
            )
            for i in range(workers)
        ]
        for p in procs:
            p.start()
        # The burst lands at a random moment of the timers' cycle, as requests do.
        time.sleep(max(0.0, t0 - time.time()) + rng.uniform(0, args.poll))
        with psycopg.connect(url, autocommit=True) as conn:
            for _ in range(args.jobs):
                conn.execute("INSERT INTO old_jobs (id) VALUES (%s)", (str(uuid.uuid4()),))
        ok = _wait_done(
            url,
            "SELECT count(*) FROM old_jobs WHERE status = 'succeeded'",
            args.jobs,
            args.timeout,
        )
        time.sleep(args.work + 0.5)  # let duplicate executions still running finish
        stop.set()
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
        with psycopg.connect(url, autocommit=True) as conn:
            created = dict(conn.execute("SELECT id, created_at FROM old_jobs").fetchall())
        execs, first, ends = read_executions(log)
    return _result("baseline", workers, args.jobs, created, first, ends, execs, not ok)


def _new_job(work: float) -> Any:
    from scribble_ray.jobs import JobOptions, Kind, NewJob

    return NewJob(kind=Kind.TEXT, options=JobOptions(title=f"sleep:{work}"), prompt="bench")


def _created(url: str) -> dict[str, datetime]:
    with psycopg.connect(url, autocommit=True) as conn:
        return dict(conn.execute("SELECT id, created_at FROM jobs").fetchall())


def run_store(args: argparse.Namespace, workers: int) -> RunResult:
    from scribble_ray.store import open_store

    ctx = mp.get_context("spawn")
    with pg_schema("bench_store") as url, tempfile.TemporaryDirectory() as tmp:
        log = str(Path(tmp) / "executions.log")
        store = open_store(url)
        stop = ctx.Event()
        ready = ctx.Semaphore(0)
        procs = [
            ctx.Process(
                target=store_worker, args=(url, log, i, args.work, stop, ready), daemon=True
            )
            for i in range(workers)
        ]
        for p in procs:
            p.start()
        for _ in procs:
            ready.acquire(timeout=120)
        time.sleep(0.5)  # LISTEN issued
        for _ in range(args.jobs):
            store.create(_new_job(args.work))
        ok = _wait_done(
            url, "SELECT count(*) FROM jobs WHERE status = 'succeeded'", args.jobs, args.timeout
        )
        time.sleep(0.3)
        stop.set()
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
        created = _created(url)
        execs, first, ends = read_executions(log)
        store.close()
    return _result("store", workers, args.jobs, created, first, ends, execs, not ok)


def run_procrastinate(args: argparse.Namespace, workers: int) -> RunResult:
    ctx = mp.get_context("spawn")
    with pg_schema("bench_procr") as url, tempfile.TemporaryDirectory() as tmp:
        log = str(Path(tmp) / "executions.log")
        app = _procrastinate_app(url, log, sync=True)
        with app.open():
            app.schema_manager.apply_schema()
            procs = [
                ctx.Process(target=procrastinate_worker, args=(url, log, i), daemon=True)
                for i in range(workers)
            ]
            for p in procs:
                p.start()
            # Ready: every worker has registered itself (Procrastinate 3's worker table).
            _wait_done(url, "SELECT count(*) FROM procrastinate_workers", workers, 120)
            time.sleep(0.5)  # and issued LISTEN
            created: dict[str, datetime] = {}
            task = app.tasks["bench_job"]
            for _ in range(args.jobs):
                job_id = str(uuid.uuid4())
                created[job_id] = datetime.fromtimestamp(time.time(), UTC)
                task.defer(job_id=job_id, work=args.work)
            ok = _wait_done(
                url,
                "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'",
                args.jobs,
                args.timeout,
            )
            for p in procs:
                p.terminate()  # SIGTERM: a graceful stop
            for p in procs:
                p.join(15)
                if p.is_alive():
                    p.kill()
        execs, first, ends = read_executions(log)
    return _result("procrastinate", workers, args.jobs, created, first, ends, execs, not ok)


def run_coordinator(args: argparse.Namespace, workers: int, exec_dir: Path) -> RunResult:
    import ray

    from benchmarks.plugins import exec_log_path
    from scribble_ray.coordinator import get_or_create_coordinator
    from scribble_ray.settings import Settings
    from scribble_ray.store import open_store

    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    with (
        pg_schema("bench_coord") as url,
        tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as data,
    ):
        settings = Settings.resolve(
            {
                "data_dir": data,
                "store_url": url,
                "renderer": "benchmarks.plugins:noop",
                "namespace": namespace,
                "pool_min": workers,
                "pool_max": workers,
                "pipeline_num_cpus": 0.1,
                "max_submissions_per_minute": 10**8,
                "max_queued_per_owner": 10**8,
            },
            env={},
        )
        store = open_store(url)
        coordinator = get_or_create_coordinator(settings)
        ray.get(coordinator.ping.remote(), timeout=300)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # the whole pool has started
            slots = ray.get(coordinator.workers.remote())
            if len(slots) >= workers and all(s["node"] for s in slots):
                break
            time.sleep(0.2)
        # Warm-up: a service is warm; each pipeline worker's first PNG/PDF loads libraries.
        warm = {store.create(_new_job(0.0))[0].id for _ in range(2 * workers)}
        done_sql = "SELECT count(*) FROM jobs WHERE status = 'succeeded'"
        _wait_done(url, done_sql, len(warm), 300)
        for _ in range(args.jobs):
            store.create(_new_job(args.work))  # the insert's NOTIFY wakes the coordinator
        ok = _wait_done(url, done_sql, len(warm) + args.jobs, args.timeout)
        ray.kill(coordinator, no_restart=True)
        created = {k: v for k, v in _created(url).items() if k not in warm}
        log = exec_log_path(namespace)
        assert log is not None and log.parent == exec_dir
        execs, first, ends = read_executions(str(log))
        for job_id in warm:
            execs.pop(job_id, None)
            first.pop(job_id, None)
        ends = [e for e in ends if e >= min(created.values())]
        store.close()
    return _result("coordinator", workers, args.jobs, created, first, ends, execs, not ok)


# -- the whole benchmark -----------------------------------------------------------------
def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.epilog = "\n".join(__doc__.splitlines()[1:])
    p.add_argument("--jobs", type=int, default=200, help="jobs in the burst (default 200)")
    p.add_argument("--work", type=float, default=0.1, help="seconds of fake work per job")
    p.add_argument("--poll", type=float, default=5.0, help="baseline poll interval, s (5)")
    p.add_argument("--phase", choices=["random", "aligned"], default="random")
    p.add_argument("--workers", type=int, nargs="+", default=[4, 8])
    p.add_argument(
        "--contenders",
        nargs="+",
        choices=CONTENDERS,
        default=list(CONTENDERS[:3]),
        help="procrastinate needs benchmarks/requirements.txt",
    )
    p.add_argument("--repeats", type=int, default=1, help="runs per contender; medians reported")
    p.add_argument("--timeout", type=float, default=1800.0, help="per run, seconds")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="40 jobs, 0.5 s poll, 4 workers")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default results/)")
    p.add_argument(
        "--from-json",
        type=Path,
        default=None,
        help="run nothing: summarize the runs of an earlier result file again",
    )
    args = p.parse_args(argv)
    if args.from_json:
        return args
    if args.quick:
        args.jobs, args.poll, args.workers = 40, 0.5, [4]
    return args


SUMMARY_KEYS = (
    "executions",
    "duplicate_executions",
    "jobs_run_more_than_once",
    "jobs_per_s",
    "wall_s",
)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.from_json:
        return resummarize(args.from_json, args.out)
    before = machine()
    exec_dir = Path(tempfile.mkdtemp(prefix="bench-exec-"))
    if "coordinator" in args.contenders:
        os.environ["SCRIBBLE_BENCH_EXEC_DIR"] = str(exec_dir)  # inherited by Ray's workers
        ray_init(num_cpus=16)
    runs: list[RunResult] = []
    for rep in range(args.repeats):
        for n in args.workers:
            for contender in args.contenders:  # interleaved: all see the same machine
                t = time.monotonic()
                if contender == "baseline":
                    r = run_baseline(args, n, seed=args.seed * 1000 + rep * 10 + n)
                elif contender == "store":
                    r = run_store(args, n)
                elif contender == "procrastinate":
                    r = run_procrastinate(args, n)
                else:
                    r = run_coordinator(args, n, exec_dir)
                runs.append(r)
                print(
                    f"rep {rep + 1} {contender:<11} x{n}: {r.done}/{r.jobs} done, "
                    f"dups {r.duplicate_executions}, {r.jobs_per_s:.1f} jobs/s, "
                    f"p50 {r.pickup['p50_ms']:.0f} ms ({time.monotonic() - t:.0f} s)",
                    flush=True,
                )
    if "coordinator" in args.contenders:
        import ray

        with contextlib.suppress(Exception):
            ray.shutdown()
    after = machine()
    name = "incident-quick" if args.quick else f"incident-poll{args.poll:g}-{args.phase}"
    report(vars(args), runs, before, after, args.out or RESULTS / f"{name}.json")
    return 0


def resummarize(path: Path, out: Path | None) -> int:
    """Summarize an earlier file's runs again (done = distinct jobs run to the end)."""
    data = json.loads(path.read_text())
    runs = []
    for r in data["runs"]:
        run = RunResult(**r)
        run.done = run.executions - run.duplicate_executions
        run.jobs_per_s = run.done / run.wall_s if run.wall_s > 0 else float("nan")
        runs.append(run)
    report(data["params"], runs, data["machine_before"], data["machine_after"], out or path)
    return 0


def _ratio(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}x"


def report(
    params: dict[str, Any],
    runs: list[RunResult],
    before: dict[str, Any],
    after: dict[str, Any],
    out: Path,
) -> None:
    args = argparse.Namespace(**params)
    summary: list[dict[str, Any]] = []
    for n in args.workers:
        base = [r for r in runs if r.contender == "baseline" and r.workers == n]
        for contender in args.contenders:
            mine = [r for r in runs if r.contender == contender and r.workers == n]
            row: dict[str, Any] = {"contender": contender, "workers": n, "runs": len(mine)}
            for k in SUMMARY_KEYS:
                row[k] = median([float(getattr(r, k)) for r in mine])
            for k in ("p50_ms", "p95_ms", "p99_ms"):
                row[k] = median([r.pickup[k] for r in mine])
            row["done"] = median([float(r.done) for r in mine])
            row["timed_out_runs"] = sum(r.timed_out for r in mine)
            if base:
                b_rate = median([r.jobs_per_s for r in base])
                b_p50 = median([r.pickup["p50_ms"] for r in base])
                row["jobs_per_s_vs_baseline"] = row["jobs_per_s"] / b_rate
                row["p50_vs_baseline"] = row["p50_ms"] / b_p50 if b_p50 else float("nan")
            summary.append(row)

    headers = [
        "contender",
        "N",
        "done",
        "execs",
        "dup execs",
        "jobs >1x",
        "jobs/s",
        "x base",
        "p50 ms",
        "p50 / base",
        "p95 ms",
        "p99 ms",
        "wall s",
    ]
    rows = [
        [
            s["contender"],
            s["workers"],
            f"{s['done']:.0f}/{args.jobs}",
            f"{s['executions']:.0f}",
            f"{s['duplicate_executions']:.0f}",
            f"{s['jobs_run_more_than_once']:.0f}",
            s["jobs_per_s"],
            _ratio(s.get("jobs_per_s_vs_baseline")),
            s["p50_ms"],
            _ratio(s.get("p50_vs_baseline"), 3),
            s["p95_ms"],
            s["p99_ms"],
            s["wall_s"],
        ]
        for s in summary
    ]
    print()
    print(
        f"burst of {args.jobs} jobs x {args.work * 1000:.0f} ms, baseline poll {args.poll:g} s "
        f"({args.phase} phase), PostgreSQL; medians of {args.repeats} run(s)"
    )
    print(
        f"machine: {before['nproc']} CPUs, load average {before['loadavg'][0]:.1f} before, "
        f"{after['loadavg'][0]:.1f} after"
    )
    print(table(headers, rows))
    result = {
        "benchmark": "incident",
        "params": {k: v for k, v in params.items() if k not in ("out", "from_json")},
        "machine_before": before,
        "machine_after": after,
        "summary": summary,
        "runs": [vars(r) for r in runs],
    }
    print(f"wrote {write_result('incident', result, out)}")


if __name__ == "__main__":
    raise SystemExit(main())
