"""The main job end to end on embedded defaults: photo in, coloring page and PDF out."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from pypdf import PdfReader

from scribble_ray.stages import STAGES
from tests.conftest import DATA, Service

PAGE_POINTS = {"A4": (595, 842), "Letter": (612, 792)}
CASES = [
    ("chelsea.png", "A4", "medium"),
    ("coffee.png", "Letter", "high"),
    ("rocket.jpg", "A4", "low"),
    ("horse.png", "Letter", "medium"),  # RGBA: alpha flattened onto white
    ("camera.png", "A4", "medium"),  # grayscale
]


@pytest.mark.parametrize(("photo", "page_size", "detail"), CASES)
def test_photo_becomes_coloring_page_and_pdf(
    service: Service, photo: str, page_size: str, detail: str
) -> None:
    resp = service.submit_photo(DATA / photo, page_size=page_size, detail=detail, title="My page")
    assert resp.status_code == 202, resp.text
    submitted = resp.json()
    assert submitted["status"] == "queued"
    assert submitted["kind"] == "image"
    assert resp.headers["location"] == f"/jobs/{submitted['id']}"

    job = service.wait_final(submitted["id"])
    assert job["status"] == "succeeded", job
    assert job["attempt"] == 1
    assert job["options"] == {
        "page_size": page_size,
        "detail": detail,
        "title": "My page",
        "line_weight": 1.0,
    }
    assert {"render", "pdf", "store"} <= set(job["timings"])
    assert job["started_at"] and job["finished_at"]
    assert set(job["artifacts"]) == {"edge.png", "coloring_page.pdf"}

    edge_resp = service.http.get(job["artifacts"]["edge.png"])
    assert edge_resp.status_code == 200
    assert edge_resp.headers["content-type"] == "image/png"
    edge = np.asarray(Image.open(io.BytesIO(edge_resp.content)).convert("L"))
    with Image.open(DATA / photo) as original:
        w, h = original.size
    assert abs(edge.shape[1] / edge.shape[0] - w / h) < 0.01, "aspect ratio must match the photo"
    dark = float((edge < 128).mean())
    white = float((edge > 200).mean())
    assert white > 0.8, f"a coloring page is mostly white, got {white:.1%}"
    assert 0.01 < dark < 0.2, f"implausible ink share {dark:.1%}"

    pdf_resp = service.http.get(job["artifacts"]["coloring_page.pdf"])
    assert pdf_resp.status_code == 200
    assert pdf_resp.headers["content-type"] == "application/pdf"
    reader = PdfReader(io.BytesIO(pdf_resp.content))
    assert len(reader.pages) == 1
    box = reader.pages[0].mediabox
    size = sorted((round(float(box.width)), round(float(box.height))))
    assert size == sorted(PAGE_POINTS[page_size])


def test_non_image_upload_is_rejected_and_service_keeps_working(service: Service) -> None:
    resp = service.http.post(
        "/jobs", files={"image": ("notes.png", b"these are not pixels", "image/png")}
    )
    assert resp.status_code == 415
    error = resp.json()["error"]
    assert error["code"] == "unsupported_media_type"
    assert "PNG" in error["message"]

    truncated = (DATA / "rocket.jpg").read_bytes()[:2000]
    resp = service.http.post("/jobs", files={"image": ("cut.jpg", truncated, "image/jpeg")})
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "corrupt_image"

    good = service.submit_photo(DATA / "chelsea.png")
    assert good.status_code == 202
    assert service.wait_final(good.json()["id"])["status"] == "succeeded"


def test_bad_requests_get_clear_json_errors(service: Service) -> None:
    missing = service.http.post("/jobs", data={"title": "no image"})
    assert missing.status_code == 422
    assert missing.json()["error"]["code"] == "missing_input"

    bad_option = service.submit_photo(DATA / "chelsea.png", page_size="A3")
    assert bad_option.status_code == 422
    assert "page_size" in bad_option.json()["error"]["message"]

    prompt = service.http.post("/jobs", json={"prompt": "a dragon reading a book"})
    assert prompt.status_code == 422
    assert prompt.json()["error"]["code"] == "renderer_unavailable"
    assert "SCRIBBLE_RENDERER=gemini" in prompt.json()["error"]["message"]

    unknown = service.http.get("/jobs/does-not-exist")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "job_not_found"

    artifact = service.http.get("/jobs/x/artifacts/..%2F..%2Fetc%2Fpasswd")
    assert artifact.status_code == 404


def test_idempotency_key_returns_the_same_job(service: Service) -> None:
    headers = {"Idempotency-Key": "upload-42"}
    photo = (DATA / "coffee.png").read_bytes()
    first = service.http.post("/jobs", files={"image": ("c.png", photo)}, headers=headers)
    second = service.http.post("/jobs", files={"image": ("c.png", photo)}, headers=headers)
    assert first.status_code == 202
    assert second.status_code == 200
    assert first.json()["id"] == second.json()["id"]
    job = service.wait_final(first.json()["id"])
    attempts = service.http.get(f"/jobs/{job['id']}/attempts").json()["attempts"]
    assert [a["outcome"] for a in attempts] == ["succeeded"]
    assert attempts[0]["worker"].startswith("pipeline-")
    assert attempts[0]["node"]


def test_health_docs_and_stats(service: Service) -> None:
    assert service.http.get("/healthz").json()["ok"] is True
    assert service.http.get("/docs").status_code == 200
    schema = service.http.get("/openapi.json").json()
    assert {"/jobs", "/jobs/{job_id}", "/jobs/{job_id}/artifacts/{name}"} <= set(schema["paths"])
    done = service.wait_final(service.submit_photo(DATA / "coffee.png").json()["id"])
    stats = service.http.get("/stats").json()
    assert stats["pool"]["size"] >= 1
    assert set(stats["by_status"]) == {"queued", "running", "succeeded", "failed", "cancelled"}
    recent = stats["recent"]  # the latest jobs, this one among them
    assert recent["outcomes"]["succeeded"] >= 1
    assert recent["pickup"]["p50_ms"] is not None
    assert set(recent["stages"]) == set(done["timings"]) == set(STAGES)
    assert recent["run"]["p50_ms"] > 0
