"""The `scribble-ray` command: talk to a running service, or render locally without one."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from scribble_ray.client import ApiError, Client

DEFAULT_URL = os.environ.get("SCRIBBLE_URL", "http://127.0.0.1:8000")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scribble-ray", description=__doc__)
    parser.add_argument("--url", default=DEFAULT_URL, help="service URL (env SCRIBBLE_URL)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("submit", help="submit a photo (or --prompt)")
    p.add_argument("photo", nargs="?", type=Path)
    p.add_argument("--prompt")
    p.add_argument("--page-size", choices=["A4", "Letter"])
    p.add_argument("--detail", choices=["low", "medium", "high"])
    p.add_argument("--line-weight", type=_line_weight, help="stroke width factor, 0.5-3.0")
    p.add_argument("--title")
    p.add_argument("--wait", action="store_true", help="wait for the job to end")
    p.add_argument("-o", "--output", type=Path, help="with --wait: download artifacts here")

    for name, text in (
        ("status", "show a job"),
        ("cancel", "cancel a job"),
        ("attempts", "show a job's attempts ledger"),
    ):
        sub.add_parser(name, help=text).add_argument("job_id")

    p = sub.add_parser("download", help="download a job's artifacts")
    p.add_argument("job_id")
    p.add_argument("-o", "--output", type=Path, default=Path("."))

    p = sub.add_parser("reprocess", help="run past jobs again with new options")
    p.add_argument("job_ids", nargs="+")
    p.add_argument("--page-size", choices=["A4", "Letter"])
    p.add_argument("--detail", choices=["low", "medium", "high"])
    p.add_argument("--lane", choices=["batch", "interactive"], default="batch")

    p = sub.add_parser("list", help="list jobs")
    p.add_argument("--status")
    p.add_argument("--limit", type=int, default=20)

    p = sub.add_parser("render", help="render a photo locally, no server needed")
    p.add_argument("photo", type=Path)
    p.add_argument("-o", "--output", type=Path, default=Path("."))
    p.add_argument("--page-size", choices=["A4", "Letter"], default="A4")
    p.add_argument("--detail", choices=["low", "medium", "high"], default="medium")
    p.add_argument("--line-weight", type=_line_weight, default=1.0, help="0.5-3.0")
    p.add_argument("--title")

    p = sub.add_parser(
        "contact-sheet",
        help="render photos locally into one PNG: each photo beside its pages, with figures",
    )
    p.add_argument("photos", nargs="+", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True, help="the sheet (.png)")
    p.add_argument(
        "--detail",
        nargs="+",
        choices=["low", "medium", "high"],
        default=["medium"],
        help="one page per detail level, side by side",
    )
    p.add_argument("--line-weight", type=_line_weight, default=1.0, help="0.5-3.0")
    p.add_argument("--cell", type=int, default=400, help="cell size in px")

    args = parser.parse_args(argv)
    try:
        if args.command == "render":
            return _render(args)
        if args.command == "contact-sheet":
            return _contact_sheet(args)
        with Client(args.url) as client:
            return _remote(client, args)
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _remote(client: Client, args: argparse.Namespace) -> int:
    if args.command == "submit":
        options = {
            k: v
            for k, v in (
                ("page_size", args.page_size),
                ("detail", args.detail),
                ("title", args.title),
                ("line_weight", args.line_weight and str(args.line_weight)),
            )
            if v
        }
        job = client.submit(args.photo, prompt=args.prompt, **options)
        if args.wait:
            job = client.wait(job["id"], on_change=_progress)
            if args.output and job["status"] == "succeeded":
                _download(client, job, args.output)
        _show(job)
        return 0 if job["status"] != "failed" else 1
    if args.command == "status":
        _show(client.get(args.job_id))
    elif args.command == "cancel":
        _show(client.cancel(args.job_id))
    elif args.command == "attempts":
        _show(client.attempts(args.job_id))
    elif args.command == "download":
        _download(client, client.get(args.job_id), args.output)
    elif args.command == "reprocess":
        options = {k: v for k, v in (("page_size", args.page_size), ("detail", args.detail)) if v}
        for job in client.reprocess(args.job_ids, lane=args.lane, **options):
            print(f"{job['id']}  from {job['source_job_id']}  {job['status']}")
    elif args.command == "list":
        for job in client.list(status=args.status, limit=args.limit):
            print(f"{job['id']}  {job['status']:<10} {job['kind']:<6} {job['created_at']}")
    return 0


def _render(args: argparse.Namespace) -> int:
    from scribble_ray.jobs import Detail, PageSize
    from scribble_ray.render.images import decode_image
    from scribble_ray.render.lineart import SOURCE_SIDE, encode_png, render_lineart
    from scribble_ray.render.pdf import make_pdf
    from scribble_ray.render.quality import measure_page

    start = time.perf_counter()
    rgb = decode_image(args.photo.read_bytes(), draft_side=SOURCE_SIDE)
    lineart = render_lineart(rgb, Detail(args.detail), line_weight=args.line_weight)
    png = encode_png(lineart)
    pdf = make_pdf(png, page_size=PageSize(args.page_size), title=args.title)
    elapsed = time.perf_counter() - start
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "edge.png").write_bytes(png)
    (args.output / "coloring_page.pdf").write_bytes(pdf)
    print(
        f"wrote {args.output / 'edge.png'} and {args.output / 'coloring_page.pdf'} "
        f"in {elapsed:.2f} s"
    )
    _print_quality(measure_page(lineart))
    return 0


def _contact_sheet(args: argparse.Namespace) -> int:
    from scribble_ray.jobs import Detail
    from scribble_ray.render.images import decode_image
    from scribble_ray.render.lineart import SOURCE_SIDE, render_lineart
    from scribble_ray.render.quality import measure_page
    from scribble_ray.render.sheet import Page, Row, contact_sheet

    if args.output.suffix.lower() != ".png":
        raise ValueError("the contact sheet is a PNG: name the output *.png")
    if args.cell < 64:
        raise ValueError("--cell must be at least 64 px")
    rows = []
    for photo in args.photos:
        rgb = decode_image(photo.read_bytes(), draft_side=SOURCE_SIDE)
        pages = []
        for detail in map(Detail, args.detail):
            lineart = render_lineart(rgb, detail, line_weight=args.line_weight)
            quality = measure_page(lineart)
            print(f"{photo.name} detail={detail.value} line_weight={args.line_weight:g}")
            _print_quality(quality)
            label = f"{detail.value}, line weight {args.line_weight:g}"
            pages.append(Page(label, lineart, quality))
        rows.append(Row(photo.name, rgb, pages))
    sheet = contact_sheet(rows, cell=args.cell)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.output, format="PNG")
    print(f"wrote {args.output} ({sheet.width}x{sheet.height})")
    return 0


def _print_quality(quality: Any) -> None:
    """One `  name value` line per figure: easy to read, easy to parse."""
    for name, value in vars(quality).items():
        print(f"  {name:<22} {value:.4g}" if isinstance(value, float) else f"  {name:<22} {value}")


def _line_weight(text: str) -> float:
    """The job option's own parsing and bounds, as an argparse type."""
    from scribble_ray.jobs import JobOptions

    try:
        return JobOptions.from_dict({"line_weight": text}).line_weight
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _download(client: Client, job: dict[str, Any], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name in job["artifacts"]:
        print(f"saved {client.download(job['id'], name, dest)}")


def _progress(change: dict[str, Any]) -> None:
    print(f"{change['id']}: {change['status']} (attempt {change['attempt']})", file=sys.stderr)


def _show(value: Any) -> None:
    print(json.dumps(value, indent=2))


if __name__ == "__main__":
    sys.exit(main())
