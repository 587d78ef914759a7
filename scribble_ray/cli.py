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

    p = sub.add_parser("list", help="list jobs")
    p.add_argument("--status")
    p.add_argument("--limit", type=int, default=20)

    p = sub.add_parser("render", help="render a photo locally, no server needed")
    p.add_argument("photo", type=Path)
    p.add_argument("-o", "--output", type=Path, default=Path("."))
    p.add_argument("--page-size", choices=["A4", "Letter"], default="A4")
    p.add_argument("--detail", choices=["low", "medium", "high"], default="medium")
    p.add_argument("--title")

    args = parser.parse_args(argv)
    try:
        if args.command == "render":
            return _render(args)
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
    elif args.command == "list":
        for job in client.list(status=args.status, limit=args.limit):
            print(f"{job['id']}  {job['status']:<10} {job['kind']:<6} {job['created_at']}")
    return 0


def _render(args: argparse.Namespace) -> int:
    from scribble_ray.jobs import Detail, PageSize
    from scribble_ray.render.images import decode_image
    from scribble_ray.render.lineart import encode_png, render_lineart
    from scribble_ray.render.pdf import make_pdf
    from scribble_ray.render.quality import measure_page

    start = time.perf_counter()
    rgb = decode_image(args.photo.read_bytes())
    lineart = render_lineart(rgb, Detail(args.detail))
    png = encode_png(lineart)
    pdf = make_pdf(png, page_size=PageSize(args.page_size), title=args.title)
    elapsed = time.perf_counter() - start
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "edge.png").write_bytes(png)
    (args.output / "coloring_page.pdf").write_bytes(pdf)
    quality = measure_page(lineart)
    print(
        f"wrote {args.output / 'edge.png'} and {args.output / 'coloring_page.pdf'} "
        f"in {elapsed:.2f} s"
    )
    for name, value in vars(quality).items():
        print(f"  {name:<22} {value:.4g}" if isinstance(value, float) else f"  {name:<22} {value}")
    return 0


def _download(client: Client, job: dict[str, Any], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name in job["artifacts"]:
        print(f"saved {client.download(job['id'], name, dest)}")


def _progress(job: dict[str, Any]) -> None:
    print(f"{job['id']}: {job['status']} (attempt {job['attempt']})", file=sys.stderr)


def _show(value: Any) -> None:
    print(json.dumps(value, indent=2))


if __name__ == "__main__":
    sys.exit(main())
