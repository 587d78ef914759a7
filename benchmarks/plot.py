"""Chart the pickup-latency distributions of the latest results (matplotlib, benchmarks only).

    .venv/bin/python benchmarks/plot.py     # writes benchmarks/results/pickup-latency.png

Reads benchmarks/results/incident-poll*.json and peers-*.json (baseline, store claim
loop, coordinator, Procrastinate, Serve + Celery; not the --kill runs) and
dispatch-steady.json (steady-rate pickups) and draws one empirical CDF per contender on a
log time axis: how long a job waited from insert to first start.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout
from benchmarks.common import RESULTS

# One colour and dash per contender, the same in every panel.
STYLES: dict[str, tuple[str, Any]] = {
    "baseline": ("C0", "-"),
    "store": ("C1", "--"),
    "coordinator": ("C2", "-."),
    "coordinator k>1": ("C6", "-."),
    "procrastinate": ("C3", ":"),
    "serve-celery": ("C4", (0, (5, 1, 1, 1, 1, 1))),
    "dispatch-sqlite": ("C5", "-"),
    "dispatch-postgres": ("C2", "-"),
}


def _cdf(ax: Any, seconds: list[float], label: str, contender: str, workers: int = 4) -> None:
    ms = sorted(max(0.1, 1000 * s) for s in seconds)  # log axis; SQLite ticks in whole ms
    ys = [(i + 1) / len(ms) for i in range(len(ms))]
    color, dash = STYLES.get(contender, ("k", "-"))
    width = 1.2 if workers <= 4 else 2.4  # x8 drawn thicker than x4
    ax.step(ms, ys, where="post", label=label, color=color, linestyle=dash, linewidth=width)


def _draw_incident(ax: Any, report: dict[str, Any], drawn: set[Any], overlay: bool) -> None:
    prm = report["params"]
    k = prm.get("jobs_per_call", 1)
    for n in prm["workers"]:
        # An overlay adds its coordinator; its peers are already in the panel.
        for contender in ["coordinator"] if overlay else prm["contenders"]:
            runs = [r for r in report["runs"] if r["contender"] == contender and r["workers"] == n]
            seconds = [s for r in runs for s in r["pickup_s"]]
            if not seconds:
                continue
            dups = sum(r["duplicate_executions"] for r in runs)
            batched = contender == "coordinator" and k > 1
            label = f"{contender} x{n}" + (f" k={k}" if batched else "")
            label += f" ({dups} dup execs, {len(runs)} runs)" if dups else ""
            _cdf(ax, seconds, label, "coordinator k>1" if batched else contender, n)
            drawn.add(contender)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--out", type=Path, default=RESULTS / "pickup-latency.png")
    args = p.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # A run saved as <name>-k<N>.json (the coordinator with N jobs per claim) adds its
    # coordinator to <name>'s panel.
    overlays: dict[Path, list[Path]] = {}
    for path in sorted(args.results.glob("incident-poll*.json")) + sorted(
        args.results.glob("peers-*.json")
    ):
        base = path.with_name(re.sub(r"-k\d+$", "", path.stem) + ".json")
        overlays.setdefault(base if base.exists() else path, []).append(path)
    incidents = sorted(overlays)
    dispatch = args.results / "dispatch-steady.json"
    panels = [*incidents, *([dispatch] if dispatch.exists() else [])]
    if not panels:
        print("no results to plot: run benchmarks/incident.py and dispatch.py first")
        return 1
    cols = min(2, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, grid = plt.subplots(rows, cols, figsize=(7.5 * cols, 5.0 * rows), squeeze=False)
    axes = [ax for row in grid for ax in row]
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    reports = {p: json.loads(p.read_text()) for paths in overlays.values() for p in paths}
    for ax, path in zip(axes, incidents, strict=False):
        report = reports[path]
        prm = report["params"]
        drawn = set()
        for run_file in overlays[path]:
            _draw_incident(ax, reports[run_file], drawn, overlay=run_file != path)
        if drawn == {"baseline"}:
            # Only the baseline depends on the poll: borrow the others from a run with the
            # same jobs and work (named in the legend).
            for other, rep in reports.items():
                if other == path or rep["params"]["jobs"] != prm["jobs"]:
                    continue
                if rep["params"]["work"] != prm["work"]:
                    continue
                for r in rep["runs"]:
                    if r["contender"] != "baseline" and r["workers"] in prm["workers"]:
                        drawn.add((r["contender"], r["workers"]))
                for contender, n in sorted(x for x in drawn if isinstance(x, tuple)):
                    seconds = [
                        s
                        for r in rep["runs"]
                        if r["contender"] == contender and r["workers"] == n
                        for s in r["pickup_s"]
                    ]
                    _cdf(ax, seconds, f"{contender} x{n} ({other.stem})", contender, n)
                break
        load = report["machine_before"]["loadavg"][0]
        title = f"{path.stem}: {prm['jobs']} jobs x {prm['work'] * 1000:.0f} ms" + (
            f", baseline poll {prm['poll']:g} s ({prm['phase']})" if "baseline" in drawn else ""
        )
        ax.set_title(
            f"{title}\nload avg {load:.1f}, {report['machine_before']['nproc']} CPUs, "
            f"{prm['repeats']} run(s) pooled",
            fontsize=9,
        )
    if dispatch.exists():
        ax = axes[len(panels) - 1]
        report = json.loads(dispatch.read_text())
        for kind, phases in report["runs"].items():
            seconds = [s for r in phases["steady"] for s in r["pickup_s"]]
            if seconds:
                label = f"coordinator, {kind} ({len(phases['steady'])} runs)"
                _cdf(ax, seconds, label, f"dispatch-{kind.split()[0]}")
        prm = report["params"]
        load = report["machine_before"]["loadavg"][0]
        ax.axvline(5, color="grey", linewidth=0.8, linestyle=":")
        ax.axvline(50, color="grey", linewidth=0.8, linestyle=":")
        ax.set_title(
            f"dispatch: no-op jobs at {prm['rate']:g}/s for {prm['seconds']:g} s, "
            f"pool {prm['pool']}\nload avg {load:.1f}; dotted: 5 ms and 50 ms targets",
            fontsize=9,
        )
    for ax in axes[: len(panels)]:
        ax.set_xscale("log")
        ax.set_xlabel("pickup latency, ms (insert to first start; log scale)")
        ax.set_ylabel("fraction of jobs")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
