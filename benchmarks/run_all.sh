#!/usr/bin/env bash
# Every benchmark with the settings BENCHMARKS.md reports, then the chart (about 50 minutes
# on 2 cores). Each script also has --help and --quick. Needs PostgreSQL on 127.0.0.1:5432
# (user postgres, database test) and: .venv/bin/pip install -r benchmarks/requirements.txt
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
$PY benchmarks/incident.py                                        # 5 s poll, random phase
$PY benchmarks/incident.py --poll 0.5 --phase aligned --repeats 3 # timers on one grid
$PY benchmarks/dispatch.py --seconds 30 --repeats 3
$PY benchmarks/http_path.py --requests 1000 --repeats 3
$PY benchmarks/e2e.py
$PY benchmarks/plot.py
