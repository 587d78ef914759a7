"""Time a 12-megapixel photo through decode -> line art -> PNG -> PDF on one core.

    .venv/bin/python benchmarks/render_bench.py [--runs 7] [--photo tests/data/coffee.png]

A benchmark, not a test: it prints a table (median and p90 per stage and in
total) and writes benchmarks/results/render.json. The target is a total under
1.0 s median on one core. For context the same process also times a plain
cv2.Canny over the same 12-MP image (gray conversion included): the floor of
"any edge detector at all", so the ratio shows what the renderer costs on top.

The machine is shared, so the load average is recorded with the figures.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import PIL
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from scribble_ray.jobs import Detail, PageSize  # noqa: E402
from scribble_ray.render import (  # noqa: E402
    decode_image,
    encode_png,
    make_pdf,
    measure_page,
    render_lineart,
)
from scribble_ray.render.lineart import SOURCE_SIDE  # noqa: E402

SIZE = (4000, 3000)  # 12 MP, a phone camera's 4:3 frame
TARGET_SECONDS = 1.0  # total median, one core
STAGES = ("decode", "lineart", "png", "pdf")


def make_photo(sample: Path, fmt: str = "JPEG") -> bytes:
    """A 12-MP photo made from a sample, as a phone would send it (JPEG) or a PNG.

    Upscaling alone gives an unnaturally smooth picture (and a small, fast file);
    mild sensor-like noise brings the file size and decode cost to a real photo's.
    """
    rgb = decode_image(sample.read_bytes())
    big = cv2.resize(rgb, SIZE, interpolation=cv2.INTER_CUBIC)
    grain = np.random.default_rng(0).normal(0.0, 3.0, big.shape).astype(np.float32)
    big = np.clip(big + grain, 0, 255).astype(np.uint8)
    out = io.BytesIO()
    if fmt == "JPEG":
        Image.fromarray(big).save(out, format="JPEG", quality=90)
    else:
        Image.fromarray(big).save(out, format="PNG")  # Pillow's default compression
    return out.getvalue()


def run_once(data: bytes, detail: Detail) -> tuple[dict[str, float], np.ndarray]:
    """One pass through the stages; seconds per stage and the line art."""
    seconds: dict[str, float] = {}

    def timed(name: str, step: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        result = step()
        seconds[name] = time.perf_counter() - start
        return result

    # As the local renderer decodes: a JPEG at the smallest scale the line art can use.
    rgb = timed("decode", lambda: decode_image(data, draft_side=SOURCE_SIDE))
    art = timed("lineart", lambda: render_lineart(rgb, detail))
    png = timed("png", lambda: encode_png(art))
    timed("pdf", lambda: make_pdf(png, page_size=PageSize.A4, title="Benchmark"))
    seconds["total"] = sum(seconds.values())
    return seconds, art


def canny_once(rgb: np.ndarray) -> float:
    """The baseline: gray + Canny over the full-size photo (decode not timed)."""
    start = time.perf_counter()
    cv2.Canny(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), 50, 150)
    return time.perf_counter() - start


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(values),
        "p90": float(np.percentile(values, 90)),  # linear interpolation between runs
        "runs": values,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", type=Path, default=ROOT / "tests/data/coffee.png")
    parser.add_argument("--detail", choices=[d.value for d in Detail], default="medium")
    parser.add_argument("--format", choices=["JPEG", "PNG"], default="JPEG")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/render.json")
    args = parser.parse_args(argv)

    cv2.setNumThreads(1)  # one core: what a pipeline worker gets under load
    data = make_photo(args.photo, args.format)
    full = decode_image(data)
    detail = Detail(args.detail)
    load_before = os.getloadavg()
    for _ in range(args.warmup):
        run_once(data, detail)
        canny_once(full)
    runs: list[dict[str, float]] = []
    baseline: list[float] = []
    art = np.zeros((1, 1), np.uint8)
    for _ in range(args.runs):  # interleaved, so both see the same machine load
        seconds, art = run_once(data, detail)
        runs.append(seconds)
        baseline.append(canny_once(full))
    load_after = os.getloadavg()

    stages = {name: summary([r[name] for r in runs]) for name in (*STAGES, "total")}
    canny = summary(baseline)
    quality = measure_page(art)
    total = stages["total"]["median"]
    report = {
        "photo": f"{args.photo.name} upscaled to {SIZE[0]}x{SIZE[1]}, "
        + ("JPEG q90" if args.format == "JPEG" else "PNG"),
        "input_bytes": len(data),
        "output_size": [int(art.shape[1]), int(art.shape[0])],
        "detail": detail.value,
        "runs": args.runs,
        "warmup": args.warmup,
        "threads": cv2.getNumThreads(),
        "stages": stages,
        "baseline_canny": canny,
        "ratio_total_to_canny": total / canny["median"],
        "ratio_lineart_to_canny": stages["lineart"]["median"] / canny["median"],
        "target_total_median": TARGET_SECONDS,
        "meets_target": total < TARGET_SECONDS,
        "quality": vars(quality),
        "machine": {
            "python": platform.python_version(),
            "opencv": cv2.__version__,
            "numpy": np.__version__,
            "pillow": PIL.__version__,
            "cpus": os.cpu_count(),
            "loadavg_before": load_before,
            "loadavg_after": load_after,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")

    print(f"{report['photo']} ({len(data) / 1e6:.1f} MB), detail {detail.value}, one thread")
    print(f"{args.runs} runs after {args.warmup} warm-up; load average {load_before[0]:.1f}")
    print(f"{'stage':<14}{'median s':>10}{'p90 s':>10}")
    for name in (*STAGES, "total"):
        print(f"{name:<14}{stages[name]['median']:>10.3f}{stages[name]['p90']:>10.3f}")
    print(f"{'canny (base)':<14}{canny['median']:>10.3f}{canny['p90']:>10.3f}")
    print(
        f"total / canny = {report['ratio_total_to_canny']:.1f}x, "
        f"lineart / canny = {report['ratio_lineart_to_canny']:.1f}x"
    )
    verdict = "meets" if report["meets_target"] else "MISSES"
    print(f"total median {total:.3f} s {verdict} the {TARGET_SECONDS:.1f} s target")
    print(
        f"page {art.shape[1]}x{art.shape[0]}: ink {100 * quality.ink_coverage:.1f}%, "
        f"regions {quality.colorable_regions}, stroke {quality.stroke_width_median:.1f} px"
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
