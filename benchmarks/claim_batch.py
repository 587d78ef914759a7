"""What a batch claim would buy on PostgreSQL: k jobs per claim statement vs one (a probe).

    .venv/bin/python benchmarks/claim_batch.py               # 1,500 claims per variant
    .venv/bin/python benchmarks/claim_batch.py --quick       # 300

The coordinator claims one job per statement and per transaction, one at a time
(dispatch is serialized in one loop), so on PostgreSQL its claim rate is bounded
by one commit round trip per job. This probe does not change the service: it runs
the store's own `claim` (JobStore.claim) and, beside it on the same pre-loaded
queue, the same statement with LIMIT k (every claimed row still locked with FOR
UPDATE SKIP LOCKED, marked running with attempt + 1 and given its ledger row) to
show the ceiling a batch claim would lift. Claims only: no results are written.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout
from benchmarks.common import machine, median, pg_schema, table, write_result
from benchmarks.dispatch import bulk_insert, new_job
from scribble_ray.store import open_store

BATCH_CLAIM = """
WITH next AS (
    SELECT id FROM jobs
     WHERE status = 'queued' AND lane = 'interactive' AND run_after <= clock_timestamp()
     ORDER BY run_after, created_at
     LIMIT %(k)s
       FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE jobs j
       SET status = 'running', attempt = j.attempt + 1, lease_owner = %(worker)s,
           lease_expires_at = clock_timestamp() + make_interval(secs => %(lease)s),
           started_at = clock_timestamp(), updated_at = clock_timestamp(),
           error = NULL, error_code = NULL
      FROM next
     WHERE j.id = next.id AND j.status = 'queued'
    RETURNING j.*
), ledger AS (
    INSERT INTO attempts (job_id, attempt, worker, node, started_at)
    SELECT id, attempt, %(worker)s, %(node)s, started_at FROM claimed
)
SELECT * FROM claimed
"""


def probe(claims: int, k: int) -> dict[str, float]:
    with pg_schema("bench_batch") as url:
        store = open_store(url)
        bulk_insert(store, [new_job(i) for i in range(2 * claims)])
        start = time.perf_counter()
        for _ in range(claims):
            store.claim("bench", "bench", 60.0)
        single = claims / (time.perf_counter() - start)
        pool: Any = store.pool  # type: ignore[attr-defined]
        got = 0
        start = time.perf_counter()
        while got < claims:
            with pool.connection() as conn:
                rows = conn.execute(
                    BATCH_CLAIM, {"k": k, "worker": "bench", "node": "bench", "lease": 60.0}
                ).fetchall()
            got += len(rows)
        batch = got / (time.perf_counter() - start)
        store.close()
    return {"single_per_s": single, "batch_per_s": batch}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.epilog = "\n".join(__doc__.splitlines()[1:])
    p.add_argument("--claims", type=int, default=1500, help="claims per variant")
    p.add_argument("--k", type=int, nargs="+", default=[4, 16], help="batch sizes")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="300 claims, 1 repeat")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.claims, args.repeats = 300, 1
    before = machine()
    runs = {k: [probe(args.claims, k) for _ in range(args.repeats)] for k in args.k}
    after = machine()
    rows = []
    summary = []
    for k, rs in runs.items():
        single = median([r["single_per_s"] for r in rs])
        batch = median([r["batch_per_s"] for r in rs])
        summary.append({"k": k, "single_per_s": single, "batch_per_s": batch})
        rows.append([str(k), single, batch, f"{batch / single:.1f}x"])
    print(f"PostgreSQL claims only, {args.claims} per variant; medians of {args.repeats} run(s)")
    print(
        f"machine: {before['nproc']} CPUs, load average {before['loadavg'][0]:.1f} before, "
        f"{after['loadavg'][0]:.1f} after"
    )
    print(table(["k", "JobStore.claim /s", "batch of k /s", "ratio"], rows))
    report = {
        "benchmark": "claim_batch",
        "params": {k: v for k, v in vars(args).items() if k != "out"},
        "machine_before": before,
        "machine_after": after,
        "summary": summary,
        "runs": {str(k): v for k, v in runs.items()},
    }
    name = "claim_batch-quick" if args.quick else "claim_batch"
    print(f"wrote {write_result(name, report, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
