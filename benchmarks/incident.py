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
                LISTEN/NOTIFY on; the job sleeps --work and logs its execution. Its
                burst is one batch_defer statement (--procrastinate-defer each: a
                defer call per job); stalled jobs are retried every second.
  serve-celery  (a peer, opt-in) Ray Serve's asynchronous inference: N replicas of a
                @task_consumer deployment, Celery over Redis, concurrency 1 per
                replica (benchmarks/peer_serve_celery.py); the producer enqueues
                through the adapter.
  coordinator   the real Coordinator actor with a pool of N pipeline workers running
                the no-op pipeline (benchmarks.plugins:noop_stages: the job sleeps
                --work and logs its execution, like the peers' jobs; no PNG or PDF),
                --jobs-per-call jobs per claim and actor call; jobs inserted into its
                store wake it.

Every execution is recorded independently of the system under test (a row per
execution for the processes, a line per render for the pipeline workers), so a
duplicate execution is counted even if the system's own bookkeeping missed it.
Reported per contender: duplicate executions, jobs/s over the burst (first insert
to last finish, database clock), pickup latency (first start - insert) p50/p95/p99,
wall time. --phase aligned starts every baseline worker's timer on the same grid
(instances started together, as by one deploy); random gives each a random phase.

--kill SIGKILLs one worker process in the middle of a job once a quarter of the
burst has finished (benchmarks/worker_kill.py) and reports, per run, jobs
completed, jobs completed more than once, jobs started more than once, jobs lost
(still not completed --kill-grace s after the last completion) and the time from
the kill to the killed job's completion.
"""

from __future__ import annotations

import argparse
import asyncio
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout
from benchmarks.common import (
    RESULTS,
    ExecLog,
    latency_summary,
    log_execution,
    log_start,
    machine,
    median,
    pg_schema,
    ray_init,
    table,
    wait_for,
    write_result,
)
from benchmarks.worker_kill import Killer, outcome

CONTENDERS = ("baseline", "store", "coordinator", "procrastinate", "serve-celery")
LEASE_S = 15.0  # the service's default lease_seconds (Settings)
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
            started = log_start(log, job_id)
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
        job = store.claim(name, "bench", LEASE_S)
        if job is None:
            wake.wait(1.0)
            continue
        started = log_start(log, job.id)
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
        started = log_start(log, job_id)  # the same machine clock as the deferring process
        time.sleep(work)
        log_execution(log, job_id, started, time.time())

    return app


def procrastinate_worker(url: str, log: str, index: int) -> None:
    app = _procrastinate_app(url, log, sync=False)
    # LISTEN/NOTIFY on (its default); one job at a time per process, like the others.
    app.run_worker(queues=["bench"], concurrency=1, name=f"procrastinate-{index}")


def retry_stalled_jobs(url: str, stop: threading.Event) -> None:
    """Procrastinate's recipe for jobs of dead workers (its docs' periodic task), every
    second: a job whose worker sent no heartbeat for 30 s (its defaults) is retried."""

    async def loop() -> None:
        import procrastinate

        app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))
        async with app.open_async():
            while not stop.is_set():
                for job in await app.job_manager.get_stalled_jobs():
                    await app.job_manager.retry_job(job)
                await asyncio.sleep(1.0)

    asyncio.run(loop())


def rescue_expired_leases(url: str, stop: threading.Event) -> None:
    """The coordinator's lease sweep, which a bare claim loop lacks: every second,
    requeue the running jobs whose lease expired (a dead worker's)."""
    from scribble_ray.store import open_store

    store = open_store(url, migrate=False)
    while not stop.wait(1.0):
        store.rescue_expired()
    store.close()


@contextlib.contextmanager
def background(target: Callable[[str, threading.Event], None], url: str) -> Iterator[None]:
    """Run target(url, stop) in a thread for the duration of the block."""
    stop = threading.Event()
    thread = threading.Thread(target=target, args=(url, stop), daemon=True, name=target.__name__)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


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
    kill: dict[str, Any] | None = None  # --kill: worker_kill.outcome
    arrival_s: float = float("nan")  # first to last insert/enqueue (0: one batch statement)


def _stall(args: argparse.Namespace) -> float | None:
    """With --kill a job may never finish: stop waiting once nothing finished for a while."""
    return args.kill_grace if args.kill else None


def _wait_done(url: str, sql: str, jobs: int, timeout: float, stall: float | None = None) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        return wait_for(lambda: conn.execute(sql).fetchone()[0], jobs, timeout, stall)  # type: ignore[index]


def _killer(args: argparse.Namespace, log: str | Path) -> Killer | None:
    """With --kill: strike once a quarter of the burst has finished, mid-job."""
    return Killer(log, after=max(1, args.jobs // 4), fresh=args.work / 2) if args.kill else None


def _result(
    contender: str,
    workers: int,
    jobs: int,
    created: dict[str, datetime],
    execs: ExecLog,
    timed_out: bool,
    killer: Killer | None = None,
) -> RunResult:
    """Summarize the jobs in `created` (warm-up jobs are not in it) from the log."""
    executions = Counter({j: n for j, n in execs.completed().items() if j in created})
    first_start = execs.first_start()
    finished = [datetime.fromtimestamp(t1, UTC) for j, _, t1 in execs.ends if j in created]
    pickups = [
        max(0.0, (first_start[j] - created[j]).total_seconds()) for j in created if j in first_start
    ]
    start = min(created.values())
    wall = (max(finished) - start).total_seconds() if finished else float("nan")
    done = len(executions)  # distinct jobs run to the end
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
        kill=outcome(killer.kill, execs, set(created)) if killer else None,
        arrival_s=(max(created.values()) - start).total_seconds(),
    )


def _stop(killer: Killer | None) -> None:
    if killer is not None:
        killer.stop()  # before teardown: never kill a process that is being stopped


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
        killer = _killer(args, log)
        with psycopg.connect(url, autocommit=True) as conn:
            for _ in range(args.jobs):
                conn.execute("INSERT INTO old_jobs (id) VALUES (%s)", (str(uuid.uuid4()),))
        ok = _wait_done(
            url,
            "SELECT count(*) FROM old_jobs WHERE status = 'succeeded'",
            args.jobs,
            args.timeout,
            _stall(args),
        )
        _stop(killer)
        time.sleep(args.work + 0.5)  # let duplicate executions still running finish
        stop.set()
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
        with psycopg.connect(url, autocommit=True) as conn:
            created = dict(conn.execute("SELECT id, created_at FROM old_jobs").fetchall())
        execs = ExecLog.read(log)
    return _result("baseline", workers, args.jobs, created, execs, not ok, killer)


def _new_job(work: float) -> Any:
    from scribble_ray.jobs import JobOptions, Kind, NewJob

    return NewJob(kind=Kind.TEXT, options=JobOptions(title=f"sleep:{work}"), prompt="bench")


def _created(url: str) -> dict[str, datetime]:
    with psycopg.connect(url, autocommit=True) as conn:
        return dict(conn.execute("SELECT id, created_at FROM jobs").fetchall())


def run_store(args: argparse.Namespace, workers: int) -> RunResult:
    from scribble_ray.store import open_store

    ctx = mp.get_context("spawn")
    with (
        pg_schema("bench_store") as url,
        tempfile.TemporaryDirectory() as tmp,
        background(rescue_expired_leases, url),
    ):
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
        killer = _killer(args, log)
        for _ in range(args.jobs):
            store.create(_new_job(args.work))
        ok = _wait_done(
            url,
            "SELECT count(*) FROM jobs WHERE status = 'succeeded'",
            args.jobs,
            args.timeout,
            _stall(args),
        )
        _stop(killer)
        time.sleep(0.3)
        stop.set()
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
        created = _created(url)
        execs = ExecLog.read(log)
        store.close()
    return _result("store", workers, args.jobs, created, execs, not ok, killer)


def _defer_burst(app: Any, jobs: int, work: float, mode: str) -> dict[str, datetime]:
    """Procrastinate's burst: one statement for all jobs (batch) or one call per job."""
    task = app.tasks["bench_job"]
    burst = [{"job_id": str(uuid.uuid4()), "work": work} for _ in range(jobs)]
    if mode == "batch":
        now = datetime.now(UTC)
        task.batch_defer(*burst)
        return dict.fromkeys((b["job_id"] for b in burst), now)
    created: dict[str, datetime] = {}
    for b in burst:
        created[b["job_id"]] = datetime.now(UTC)
        task.defer(**b)
    return created


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
            with background(retry_stalled_jobs, url):
                killer = _killer(args, log)
                created = _defer_burst(app, args.jobs, args.work, args.procrastinate_defer)
                ok = _wait_done(
                    url,
                    "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'",
                    args.jobs,
                    args.timeout,
                    _stall(args),
                )
                _stop(killer)
            for p in procs:
                p.terminate()  # SIGTERM: a graceful stop
            for p in procs:
                p.join(15)
                if p.is_alive():
                    p.kill()
        execs = ExecLog.read(log)
    return _result("procrastinate", workers, args.jobs, created, execs, not ok, killer)


def run_serve_celery(args: argparse.Namespace, workers: int, exec_dir: Path) -> RunResult:
    from benchmarks import peer_serve_celery as peer

    log = str(exec_dir / f"serve-celery-{uuid.uuid4().hex[:8]}.log")
    with peer.running(
        workers, log, num_cpus=0.1, visibility_timeout=args.celery_visibility_timeout
    ) as adapter:
        killer = _killer(args, log)
        created = peer.enqueue_burst(adapter, args.jobs, args.work)
        ok = wait_for(
            lambda: len(ExecLog.read(log).completed()), args.jobs, args.timeout, _stall(args)
        )
        _stop(killer)
        time.sleep(args.work + 0.5)  # let duplicate executions still running finish
    return _result("serve-celery", workers, args.jobs, created, ExecLog.read(log), not ok, killer)


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
                "stages": "benchmarks.plugins:noop_stages",
                "jobs_per_call": args.jobs_per_call,
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
        # Warm-up: a service is warm (every pipeline worker has run a job).
        warm = {store.create(_new_job(0.0))[0].id for _ in range(2 * workers)}
        done_sql = "SELECT count(*) FROM jobs WHERE status = 'succeeded'"
        _wait_done(url, done_sql, len(warm), 300)
        log = exec_log_path(namespace)
        assert log is not None and log.parent == exec_dir
        killer = _killer(args, log)
        for _ in range(args.jobs):
            store.create(_new_job(args.work))  # the insert's NOTIFY wakes the coordinator
        ok = _wait_done(url, done_sql, len(warm) + args.jobs, args.timeout, _stall(args))
        _stop(killer)
        ray.kill(coordinator, no_restart=True)
        created = {k: v for k, v in _created(url).items() if k not in warm}
        execs = ExecLog.read(log)
        store.close()
    return _result("coordinator", workers, args.jobs, created, execs, not ok, killer)


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
        help="procrastinate and serve-celery need benchmarks/requirements.txt",
    )
    p.add_argument(
        "--kill",
        action="store_true",
        help="SIGKILL one worker process mid-job once a quarter of the burst is done",
    )
    p.add_argument(
        "--kill-grace",
        type=float,
        default=60.0,
        help="with --kill: stop waiting once no job finished for this long, s (60)",
    )
    p.add_argument(
        "--procrastinate-defer",
        choices=["batch", "each"],
        default="batch",
        help="Procrastinate's burst: one batch_defer statement (default) or a defer per job",
    )
    p.add_argument(
        "--celery-visibility-timeout",
        type=float,
        default=None,
        help="serve-celery: Redis visibility_timeout, s (default Kombu's 3600)",
    )
    p.add_argument(
        "--jobs-per-call", type=int, default=1, help="the coordinator's jobs_per_call (1)"
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
    if args.kill and args.work <= 0:
        p.error("--kill needs --work > 0: a job must be running when its worker is killed")
    return args


SUMMARY_KEYS = (
    "executions",
    "duplicate_executions",
    "jobs_run_more_than_once",
    "jobs_per_s",
    "wall_s",
    "arrival_s",
)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.from_json:
        return resummarize(args.from_json, args.out)
    before = machine()
    exec_dir = Path(tempfile.mkdtemp(prefix="bench-exec-"))
    uses_ray = bool({"coordinator", "serve-celery"} & set(args.contenders))
    if uses_ray:
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
                elif contender == "serve-celery":
                    r = run_serve_celery(args, n, exec_dir)
                else:
                    r = run_coordinator(args, n, exec_dir)
                runs.append(r)
                print(
                    f"rep {rep + 1} {contender:<13} x{n}: {r.done}/{r.jobs} done, "
                    f"dups {r.duplicate_executions}, {r.jobs_per_s:.1f} jobs/s, "
                    f"p50 {r.pickup['p50_ms']:.0f} ms ({time.monotonic() - t:.0f} s)",
                    flush=True,
                )
    if uses_ray:
        import ray

        with contextlib.suppress(Exception):
            ray.shutdown()
    after = machine()
    name = "incident-quick" if args.quick else f"incident-poll{args.poll:g}-{args.phase}"
    name += "-kill" if args.kill else ""
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


def kill_table(runs: list[RunResult]) -> str:
    """One row per --kill run: what one SIGKILL mid-job did."""
    headers = [
        "contender",
        "N",
        "killed mid-job",
        "completed",
        "completed >1x",
        "started >1x",
        "lost",
        "recovery s",
        "wall s",
    ]
    rows = []
    for r in runs:
        k = r.kill or {}
        mid = {True: "yes", False: "no (finished first)", None: "no kill"}[k.get("killed_mid_job")]
        rows.append(
            [
                r.contender,
                r.workers,
                mid,
                f"{k.get('completed', r.done)}/{r.jobs}",
                k.get("completed_more_than_once", "-"),
                k.get("started_more_than_once", "-"),
                len(k.get("lost", [])),
                k.get("recovery_s", float("nan")),
                r.wall_s,
            ]
        )
    return "\nworker killed mid-job (SIGKILL), per run:\n" + table(headers, rows)


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
        "arrival s",
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
            s["arrival_s"],
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
    if any(r.kill is not None for r in runs):
        print(kill_table(runs))
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
