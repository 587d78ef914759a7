"""AsyncClient against a real service: submit, wait over SSE (one request), download,
list, cancel, reprocess, errors, and concurrent jobs with asyncio.gather."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from pypdf import PdfReader

from scribble_ray.client import ApiError, AsyncClient
from tests.conftest import DATA, Service, start_service, stop_service
from tests.fake_sse import TOKEN, ClosedEarlyEvents
from tests.test_e2e import PAGE_POINTS
from tests.test_exactly_once import FAST_RETRY
from tests.test_waiting_and_batch import requests_counted

EVENTS_ROUTE = "GET /jobs/{job_id}/events"


@pytest.fixture(scope="module")
def svc(serve_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    # The scripted renderer: a real photo is uploaded, sniffed, decoded and fetched, and a
    # title such as "sleep:30" keeps a job running long enough to cancel it for sure.
    service = start_service(
        serve_url, tmp_path_factory.mktemp("async"), pool_min=2, pool_max=2, **FAST_RETRY
    )
    yield service
    stop_service(service)


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


def test_submit_a_photo_wait_with_one_request_and_download(svc: Service, tmp_path: Path) -> None:
    async def main() -> tuple[dict[str, Any], dict[str, Any], list[str], dict[str, int]]:
        changes: list[str] = []

        async def on_change(change: dict[str, Any]) -> None:  # a coroutine is awaited
            changes.append(change["status"])

        async with AsyncClient(svc.url) as client:
            job = await client.submit(DATA / "chelsea.png", page_size="Letter", title="sleep:0.5")
            before = requests_counted(svc)
            final = await client.wait(job["id"], on_change=on_change)
            waited = delta(before, requests_counted(svc))
            await client.download(job["id"], "coloring_page.pdf", tmp_path)
            await client.download(job["id"], "edge.png", tmp_path / "page.png")
        return job, final, changes, waited

    job, final, changes, waited = asyncio.run(main())
    assert job["status"] == "queued" and job["kind"] == "image"
    assert final["id"] == job["id"] and final["status"] == "succeeded"
    assert changes == ["queued", "running", "succeeded"]
    assert waited == {EVENTS_ROUTE: 1}, "the whole wait is one SSE request"
    reader = PdfReader(io.BytesIO((tmp_path / "coloring_page.pdf").read_bytes()))
    assert len(reader.pages) == 1
    box = reader.pages[0].mediabox
    assert sorted((round(float(box.width)), round(float(box.height)))) == sorted(
        PAGE_POINTS["Letter"]
    )
    with Image.open(tmp_path / "page.png") as page:
        assert page.format == "PNG"


def test_list_cancel_reprocess_and_errors(svc: Service) -> None:
    async def main() -> None:
        async with AsyncClient(svc.url) as client:
            done = await client.submit((DATA / "coffee.png").read_bytes(), title="fast")
            slow = await client.submit(DATA / "rocket.jpg", title="sleep:30")
            assert (await client.wait(done["id"]))["status"] == "succeeded"

            cancelled = await client.cancel(slow["id"])
            assert cancelled["status"] == "cancelled"
            assert (await client.wait(slow["id"]))["status"] == "cancelled"
            assert (await client.get(slow["id"]))["status"] == "cancelled"
            assert [a["attempt"] for a in await client.attempts(done["id"])] == [1]

            listed = await client.list(status="cancelled")
            assert slow["id"] in {j["id"] for j in listed}
            assert all(j["status"] == "cancelled" for j in listed)
            newest = await client.list(limit=1)
            assert [j["id"] for j in newest] == [slow["id"]]
            older = await client.list(before=slow["created_at"], limit=500)
            assert done["id"] in {j["id"] for j in older}
            assert slow["id"] not in {j["id"] for j in older}

            redone = await client.reprocess([done["id"]], page_size="Letter", detail="high")
            assert [j["source_job_id"] for j in redone] == [done["id"]]
            assert redone[0]["lane"] == "batch"
            assert redone[0]["options"]["page_size"] == "Letter"
            assert (await client.wait(redone[0]["id"]))["status"] == "succeeded"

            with pytest.raises(ApiError) as not_an_image:
                await client.submit(b"these are not pixels")
            assert (not_an_image.value.status, not_an_image.value.code) == (
                415,
                "unsupported_media_type",
            )
            with pytest.raises(ApiError) as bad_option:
                await client.submit(DATA / "chelsea.png", page_size="A3")
            assert (bad_option.value.status, bad_option.value.code) == (422, "invalid_option")
            with pytest.raises(ApiError) as missing:
                await client.wait("no-such-job")
            assert (missing.value.status, missing.value.code) == (404, "job_not_found")
            with pytest.raises(ApiError) as not_ready:
                await client.download(slow["id"], "edge.png", "/nonexistent")
            assert not_ready.value.code == "not_ready"
            with pytest.raises(ValueError):
                await client.submit()

    asyncio.run(main())


def test_concurrent_jobs_with_gather(svc: Service) -> None:
    photos = [DATA / "chelsea.png", DATA / "coffee.png", DATA / "horse.png"] * 2

    async def main() -> tuple[list[dict[str, Any]], dict[str, int]]:
        async with AsyncClient(svc.url) as client:
            jobs = await asyncio.gather(
                *(client.submit(p, title=f"sleep:0.{i}") for i, p in enumerate(photos))
            )
            before = requests_counted(svc)
            finals = await asyncio.gather(*(client.wait(j["id"]) for j in jobs))
            return list(finals), delta(before, requests_counted(svc))

    finals, waited = asyncio.run(main())
    assert len({j["id"] for j in finals}) == len(photos)
    assert [j["status"] for j in finals] == ["succeeded"] * len(photos)
    assert waited == {EVENTS_ROUTE: len(photos)}, "one SSE request per waiting job"


def test_wait_reconnects_without_repeating_changes() -> None:
    """A stream the server closes before the end is followed by a new one (no service)."""
    events = ClosedEarlyEvents()

    async def main() -> tuple[dict[str, Any], list[str]]:
        changes: list[str] = []
        async with AsyncClient("http://test", token=TOKEN) as client:
            await client.http.aclose()
            client.http = httpx.AsyncClient(
                base_url="http://test",
                headers=client.http.headers,
                transport=httpx.MockTransport(events),
            )
            job = await client.wait(
                "j", timeout=30, on_change=lambda c: changes.append(c["status"])
            )
        return job, changes

    job, changes = asyncio.run(main())
    assert job == {"id": "j", "status": "succeeded"}
    assert len(events.served) == 2
    assert changes == ["queued", "running", "succeeded"]
