#!/usr/bin/env bash
# Every benchmark with the settings BENCHMARKS.md reports, then the chart (about 75 minutes
# on 2 cores). Each script also has --help and --quick. Needs PostgreSQL on 127.0.0.1:5432
# (user postgres, database test) and: .venv/bin/pip install -r benchmarks/requirements.txt
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
$PY benchmarks/incident.py --contenders baseline                   # 5 s poll, random phase
$PY benchmarks/incident.py --poll 0.5 --phase aligned --repeats 3 \
  --contenders baseline store coordinator procrastinate            # timers on one grid
$PY benchmarks/incident.py --work 0 --jobs 1000 --workers 4 --repeats 3 \
  --contenders store coordinator procrastinate serve-celery \
  --out benchmarks/results/peers-noop.json                         # no-op jobs, with the peers
$PY benchmarks/incident.py --work 0 --jobs 1000 --workers 4 --repeats 3 \
  --contenders coordinator --jobs-per-call 16 \
  --out benchmarks/results/peers-noop-k16.json                     # the same, 16 jobs per claim
$PY benchmarks/incident.py --poll 0.5 --phase aligned --workers 4 --repeats 3 \
  --contenders baseline store coordinator procrastinate serve-celery \
  --out benchmarks/results/peers-100ms.json                        # 100 ms jobs, with the peers
$PY benchmarks/incident.py --poll 0.5 --phase aligned --workers 4 --repeats 3 \
  --contenders coordinator procrastinate serve-celery --jobs-per-call 4 \
  --out benchmarks/results/peers-100ms-k4.json                     # the same, 4 jobs per claim
$PY benchmarks/incident.py --kill --poll 0.5 --phase aligned --workers 4 --repeats 2 \
  --contenders baseline store coordinator procrastinate serve-celery \
  --out benchmarks/results/kill.json                               # one worker SIGKILLed mid-job
$PY benchmarks/incident.py --kill --workers 4 --repeats 2 --contenders serve-celery \
  --celery-visibility-timeout 10 --out benchmarks/results/kill-serve-celery-vt10.json
$PY benchmarks/dispatch.py --phases store-only burst --repeats 3 \
  --out benchmarks/results/dispatch-burst.json                     # 5,000 jobs, k = 1 and 16
$PY benchmarks/dispatch.py --phases steady --jobs-per-call 1 --repeats 3 \
  --out benchmarks/results/dispatch-steady.json                    # 100 jobs/s for 60 s
$PY benchmarks/http_path.py --requests 600 --repeats 3
$PY benchmarks/e2e.py --jobs 100 --repeats 3
$PY benchmarks/plot.py
