"""The web page in a real browser: Debian's chromium, driven by Playwright's Python package.

.ci/run installs chromium when /usr/bin/chromium is missing; never `playwright install`.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from pypdf import PdfReader

from tests.conftest import DATA, Service, start_service, stop_service

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
JOB_TIMEOUT_MS = 90_000


@pytest.fixture(scope="module")
def svc(serve_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    service = start_service(serve_url, tmp_path_factory.mktemp("web"))  # the local renderer
    yield service
    stop_service(service)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    page = context.new_page()
    yield page
    context.close()


def test_photo_to_preview_and_pdf_in_the_browser(svc: Service, page: Page) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(svc.url + "/")
    expect(page).to_have_title("scribble-ray: coloring pages")
    pdf_link, preview = page.locator("#pdf"), page.locator("#preview")
    expect(pdf_link).to_be_hidden()

    page.set_input_files("#image", DATA / "chelsea.png")
    expect(page.locator("#chosen")).to_have_text("Chosen: chelsea.png")
    page.select_option("#page_size", "Letter")
    page.click("#submit")

    expect(preview).to_be_visible(timeout=JOB_TIMEOUT_MS)
    expect(pdf_link).to_be_visible()
    expect(page.locator("#status")).to_have_text("succeeded")
    expect(page.locator("#error")).to_have_text("")
    # The preview is the decoded edge.png, not a broken image.
    page.wait_for_function("() => document.getElementById('preview').naturalWidth > 0")
    assert "/artifacts/edge.png" in (preview.get_attribute("src") or "")

    href = pdf_link.evaluate("a => a.href")  # absolute
    assert href.endswith("/artifacts/coloring_page.pdf")
    resp = page.request.get(href)
    assert resp.status == 200
    assert resp.headers["content-type"].startswith("application/pdf")
    body = resp.body()
    assert body.startswith(b"%PDF-")
    pdf = PdfReader(io.BytesIO(body))
    assert len(pdf.pages) == 1
    box = pdf.pages[0].mediabox
    size_pt = sorted(round(float(v)) for v in (box.width, box.height))
    assert size_pt == [612, 792], "the Letter page size chosen on the page reached the job"
    assert errors == []
