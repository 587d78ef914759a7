"""Gemini line art through the real google-genai SDK, against a fake Gemini on loopback.

First the renderer on its own (no Ray), then the whole service: exactly-once
payment with workers killed mid-call, the cluster-wide limits, 429 bursts,
blocked prompts, timeouts, and the API key kept out of every log and record.
"""

from __future__ import annotations

import io
import logging
import os
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import ray
from google.genai import errors
from PIL import Image

from scribble_ray.blobs import open_blobs
from scribble_ray.jobs import (
    Detail,
    Job,
    JobOptions,
    Kind,
    Lane,
    PageSize,
    PermanentJobError,
    Status,
    TransientJobError,
)
from scribble_ray.render.cleanup import clean_lineart
from scribble_ray.render.gemini import GeminiRenderer, retry_after_seconds
from scribble_ray.settings import Settings
from tests.conftest import Service, start_service, stop_service
from tests.fake_gemini import Call, FakeGemini

# A fresh fake key per run. Pipeline workers read GEMINI_API_KEY from their own
# environment, which the workers of this local test cluster inherit from the
# driver at ray.init; test modules are imported before any fixture runs, so this
# is in place before the session's Ray starts.
API_KEY = f"test-{secrets.token_hex(16)}"
os.environ["GEMINI_API_KEY"] = API_KEY


def photo(i: int) -> bytes:
    """A small photo whose color spells its index (0..4095) in 3 hex digits; the colors
    are 16 apart, so the index survives the JPEG the renderer sends to Gemini."""
    color = tuple(((i >> shift) % 16) * 16 + 8 for shift in (8, 4, 0))
    out = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(out, "PNG")
    return out.getvalue()


def photo_index(jpeg: bytes) -> int:
    pixel = Image.open(io.BytesIO(jpeg)).convert("RGB").getpixel((32, 24))
    r, g, b = (int(v) // 16 for v in pixel)  # type: ignore[union-attr]
    return (r << 8) | (g << 4) | b


def make_job(
    job_id: str = "job-1",
    *,
    prompt: str | None = None,
    detail: Detail = Detail.MEDIUM,
    title: str | None = None,
    page_size: PageSize = PageSize.A4,
) -> Job:
    return Job(
        id=job_id,
        kind=Kind.TEXT if prompt is not None else Kind.IMAGE,
        status=Status.RUNNING,
        attempt=1,
        max_attempts=3,
        options=JobOptions(page_size=page_size, detail=detail, title=title),
        owner="local",
        lane=Lane.INTERACTIVE,
        created_at=datetime.now(UTC),
        prompt=prompt,
    )


@pytest.fixture
def fake() -> Iterator[FakeGemini]:
    with FakeGemini(API_KEY) as server:
        yield server


def renderer(fake: FakeGemini, tmp_path: Path, **settings: Any) -> GeminiRenderer:
    """A renderer as a restarted worker would make it: same settings, same blob store."""
    args = {
        "data_dir": str(tmp_path),
        "renderer": "gemini",
        "gemini_base_url": fake.url,
        "gemini_timeout_seconds": 10.0,
        "gemini_retry_base_seconds": 0.2,
        **settings,
    }
    return GeminiRenderer(Settings.resolve(args, env={}))


# -- clean-up ---------------------------------------------------------------------


def test_clean_up_makes_two_tones_on_white_paper_without_specks() -> None:
    page = np.full((120, 160, 3), (238, 232, 218), np.uint8)  # tinted paper
    page[30:33, 20:140] = 15  # a line...
    page[29, 20:140] = page[33, 20:140] = 140  # ...with anti-aliased edges
    page[80:110, 70] = 30
    page[5, 5] = page[100, 150] = 0  # specks
    clean = clean_lineart(page)
    assert set(np.unique(clean)) == {0, 255}
    assert (clean[30:33, 20:140] == 0).all() and (clean[80:110, 70] == 0).all()
    assert clean[5, 5] == 255 and clean[100, 150] == 255, "specks are removed"
    assert clean[60, 100] == 255, "paper is pure white"

    inverted = clean_lineart(255 - page)  # white lines on black
    assert inverted[60, 100] == 255 and (inverted[30:33, 20:140] == 0).all()
    blank = clean_lineart(np.full((50, 50, 3), 240, np.uint8))
    assert (blank == 255).all(), "paper grain on a blank page is not ink"


# -- the renderer on its own --------------------------------------------------------


def test_prompt_and_photo_become_clean_pages_through_the_sdk(
    fake: FakeGemini, tmp_path: Path
) -> None:
    r = renderer(fake, tmp_path)
    text_job = make_job("t", prompt="a dragon reading a book")
    page = r.render(text_job, None)
    assert set(np.unique(page)) == {0, 255}
    assert page[5, 5] == 255, "the fake's specks are gone"
    assert page[16, 80] == 0, "the fake's frame is kept"
    assert r.usage(text_job) == {"gemini_calls": 1, "gemini_cache_hit": 0, "gemini_tokens": 1314}

    photo_job = make_job("p")
    r.render(photo_job, photo(7))
    [text_call, photo_call] = fake.calls
    assert text_call.model == "gemini-2.5-flash-image"
    assert "a dragon reading a book" in text_call.text and text_call.image is None
    assert photo_call.image is not None and photo_call.image.startswith(b"\xff\xd8\xff")
    assert photo_index(photo_call.image) == 7, "the photo itself was sent (as JPEG)"


def test_cache_answers_retries_and_resubmissions_without_a_call(
    fake: FakeGemini, tmp_path: Path
) -> None:
    first = make_job("a", title="Mine", page_size=PageSize.A4)
    renderer(fake, tmp_path).render(first, photo(1))
    assert len(fake.calls) == 1

    # A retry on a restarted worker, and an identical resubmission with another title
    # and page size (neither changes what Gemini is asked): no call.
    for job in (first, make_job("b", title="Yours", page_size=PageSize.LETTER)):
        r = renderer(fake, tmp_path)
        r.render(job, photo(1))
        assert r.usage(job) == {"gemini_calls": 0, "gemini_cache_hit": 1}
    assert len(fake.calls) == 1
    blobs = open_blobs(f"file://{tmp_path / 'blobs'}")
    assert len(blobs.list("cache/gemini/")) == 1

    # What Gemini is asked does change: a new call each.
    renderer(fake, tmp_path).render(make_job("c", detail=Detail.HIGH), photo(1))
    renderer(fake, tmp_path).render(make_job("d"), photo(2))
    renderer(fake, tmp_path, gemini_model="gemini-other").render(make_job("e"), photo(1))
    assert len(fake.calls) == 4


def test_answer_is_cached_before_anything_else_can_fail(
    fake: FakeGemini, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that dies right after the call returned has already paid for the last time."""

    def crash(_: np.ndarray) -> np.ndarray:
        raise SystemExit("the worker died during clean-up")

    job = make_job(prompt="a lighthouse")
    with monkeypatch.context() as patch:
        patch.setattr("scribble_ray.render.gemini.clean_lineart", crash)
        with pytest.raises(SystemExit):
            renderer(fake, tmp_path).render(job, None)
    again = renderer(fake, tmp_path)
    again.render(job, None)
    assert again.usage(job)["gemini_cache_hit"] == 1
    assert len(fake.calls) == 1


@pytest.mark.parametrize(
    ("marker", "code", "words"),
    [
        ("[block]", "content_blocked", "declined this request (SAFETY)"),
        ("[finish-safety]", "content_blocked", "safety reasons (IMAGE_SAFETY)"),
        ("[no-image]", "no_image", "without an image"),
    ],
)
def test_a_refusal_fails_for_good_with_a_reason_a_user_can_read(
    fake: FakeGemini, tmp_path: Path, marker: str, code: str, words: str
) -> None:
    r = renderer(fake, tmp_path)
    job = make_job(prompt=f"{marker} a monster")
    with pytest.raises(PermanentJobError) as failure:
        r.render(job, None)
    assert failure.value.code == code
    assert words in str(failure.value)
    assert len(fake.calls) == 1, "a refusal is not retried"
    assert r.usage(job)["gemini_calls"] == 1
    assert not open_blobs(f"file://{tmp_path / 'blobs'}").list("cache/")


def test_server_errors_are_retried_with_backoff(fake: FakeGemini, tmp_path: Path) -> None:
    fake.fail(2, 503)
    r = renderer(fake, tmp_path, gemini_retry_base_seconds=0.4)
    job = make_job(prompt="a castle")
    r.render(job, None)
    calls = fake.calls
    assert [c.status for c in calls] == [503, 503, 200]
    # Full-jitter backoff: at least half of 0.4 s, then half of 0.8 s.
    assert calls[1].arrived - calls[0].finished >= 0.2  # type: ignore[operator]
    assert calls[2].arrived - calls[1].finished >= 0.4  # type: ignore[operator]
    assert r.usage(job)["gemini_calls"] == 3


def test_server_errors_every_time_end_the_attempt_as_transient(
    fake: FakeGemini, tmp_path: Path
) -> None:
    fake.fail(10, 500)
    with pytest.raises(TransientJobError) as failure:
        renderer(fake, tmp_path, gemini_tries=3, gemini_retry_base_seconds=0.05).render(
            make_job(prompt="a castle"), None
        )
    assert failure.value.code == "gemini_unavailable"
    assert "3 tries" in str(failure.value)
    assert len(fake.calls) == 3


def test_a_timeout_is_retried_then_reported(fake: FakeGemini, tmp_path: Path) -> None:
    fake.slow_seconds = 5.0
    r = renderer(fake, tmp_path, gemini_timeout_seconds=0.5, gemini_tries=2)
    with pytest.raises(TransientJobError) as failure:
        r.render(make_job(prompt="[slow] a sloth"), None)
    assert failure.value.code == "gemini_timeout"
    assert "no answer within 0.5 s" in str(failure.value)
    calls = fake.calls
    assert len(calls) == 2
    for call in calls:  # the server notices a hang-up on its own thread, a moment later
        fake.wait_hung_up(call, timeout=30)
    fake_saw_hang_up = [c.hung_up for c in calls]
    assert fake_saw_hang_up == [True, True], "the client gave up; the server did not answer"


def test_429_waits_for_retry_after(fake: FakeGemini, tmp_path: Path) -> None:
    fake.throttle(1, retry_after=0.8)
    job = make_job(prompt="a kite")
    r = renderer(fake, tmp_path)
    r.render(job, None)
    throttled, answered = fake.calls
    assert throttled.status == 429 and answered.status == 200
    assert answered.arrived - throttled.finished >= 0.8  # type: ignore[operator]
    assert r.usage(job)["gemini_calls"] == 2


def test_retry_after_from_header_date_or_body() -> None:
    def error(headers: dict[str, str], details: list[Any] | None = None) -> errors.APIError:
        body: dict[str, Any] = {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "slow"}
        if details:
            body["details"] = details
        response = httpx.Response(429, headers=headers, json={"error": body})
        return errors.APIError(429, {"error": body}, response)

    assert retry_after_seconds(error({"Retry-After": "7"})) == 7.0
    when = format_datetime(datetime.fromtimestamp(time.time() + 30, UTC), usegmt=True)
    assert 25 <= retry_after_seconds(error({"Retry-After": when})) <= 31  # type: ignore[operator]
    info = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "12.5s"}]
    assert retry_after_seconds(error({}, info)) == 12.5
    assert retry_after_seconds(error({"Retry-After": "86400"})) == 300.0, "capped"
    assert retry_after_seconds(error({})) is None


def test_without_an_api_key_jobs_fail_saying_how_to_fix_it(
    fake: FakeGemini, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GEMINI_API_KEY")
    with pytest.raises(PermanentJobError) as failure:
        renderer(fake, tmp_path).render(make_job(prompt="a fox"), None)
    assert failure.value.code == "renderer_unavailable"
    assert "GEMINI_API_KEY" in str(failure.value)
    assert fake.calls == []


def test_a_wrong_api_key_is_rejected_without_retry_and_without_echo(
    fake: FakeGemini, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = f"wrong-{secrets.token_hex(8)}"
    monkeypatch.setenv("GEMINI_API_KEY", wrong)
    with pytest.raises(PermanentJobError) as failure:
        renderer(fake, tmp_path).render(make_job(prompt="a fox"), None)
    assert failure.value.code == "gemini_rejected"
    assert wrong not in str(failure.value)


def test_the_key_is_in_no_log_line_even_at_debug(
    fake: FakeGemini, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.throttle(1, retry_after=0.1)
    fake.fail(1, 500)
    r = renderer(fake, tmp_path, gemini_retry_base_seconds=0.05)
    r.render(make_job(prompt="an owl"), None)
    with pytest.raises(PermanentJobError):
        r.render(make_job(prompt="[block] an owl"), None)
    assert "Gemini call 1/4 failed" in caplog.text, "the retries were logged"
    assert len(caplog.records) > 3
    assert API_KEY not in caplog.text
    assert all(API_KEY not in str(r.__dict__) for r in caplog.records)


# -- the whole service -------------------------------------------------------------
# One service for most tests (starting one costs ~10 s here); each test uses its own
# job numbers, so the shared answer cache never answers for another test.

MAX_CONCURRENCY = 4
SERVICE = {
    "renderer": "gemini",
    "pool_min": 6,  # more workers than permits: the limiter, not the pool, bounds calls
    "pool_max": 6,
    "pipeline_num_cpus": 0.25,
    "gemini_max_concurrency": MAX_CONCURRENCY,
    "gemini_max_per_minute": 10_000,  # unit-tested in test_limits; not what this file measures
    "gemini_timeout_seconds": 60.0,  # this machine is busy: only the timeout test times out
    "gemini_retry_base_seconds": 0.1,
    "retry_base_seconds": 0.2,
    "lease_seconds": 5.0,
    "max_submissions_per_minute": 100_000,  # the ingress's own limits are not under test
    "max_queued_per_owner": 1_000,
}


@contextmanager
def gemini_service(
    fake: FakeGemini, serve_url: str, data_dir: Path, **overrides: Any
) -> Iterator[Service]:
    svc = start_service(serve_url, data_dir, gemini_base_url=fake.url, **{**SERVICE, **overrides})
    try:
        yield svc
    finally:
        stop_service(svc)


@pytest.fixture(scope="module")
def shared(
    serve_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[FakeGemini, Service]]:
    with (
        FakeGemini(API_KEY) as fake,
        gemini_service(fake, serve_url, tmp_path_factory.mktemp("gemini")) as svc,
    ):
        yield fake, svc


@pytest.fixture
def gemini(shared: tuple[FakeGemini, Service]) -> tuple[FakeGemini, Service]:
    fake, svc = shared
    fake.reset()
    return fake, svc


def subject(i: int) -> str:
    return f"subject-{i:04d} reading a book"


def submit(svc: Service, i: int) -> str:
    """Job i: a prompt when i is even, a photo when it is odd."""
    if i % 2 == 0:
        resp = svc.http.post("/jobs", json={"prompt": subject(i)})
    else:
        resp = svc.http.post("/jobs", files={"image": (f"{i}.png", photo(i))})
    assert resp.status_code == 202, resp.text
    return str(resp.json()["id"])


def index_of(call: Call) -> int:
    """Which job i a call is for: its prompt's subject, or its photo's color."""
    if call.image is not None:
        return photo_index(call.image)
    return int(call.text.split("subject-", 1)[1][:4])


def run_jobs(svc: Service, indexes: list[int]) -> list[dict[str, Any]]:
    """Submit in parallel, then wait for each in turn (one long-poll at a time: the
    ingress replica serves a few requests at once, and the jobs end in about this order)."""
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda i: submit(svc, i), indexes))
    return [svc.wait_final(job_id) for job_id in ids]


def ledger(svc: Service, job_id: str) -> list[dict[str, Any]]:
    return list(svc.http.get(f"/jobs/{job_id}/attempts").json()["attempts"])


def limiter_stats(svc: Service) -> dict[str, Any]:
    return dict(ray.get(svc.coordinator().gemini_stats.remote()))


def test_a_timeout_is_retried_then_reported_in_the_job(serve_url: str, tmp_path: Path) -> None:
    # Its own service (a 1 s timeout); first in this section, so it never runs
    # while the shared one is up (Serve runs one app of this name at a time).
    with (
        FakeGemini(API_KEY, slow_seconds=10.0) as fake,
        gemini_service(
            fake,
            serve_url,
            tmp_path,
            pool_min=1,
            pool_max=1,
            gemini_timeout_seconds=1.0,
            gemini_tries=2,
            max_attempts=2,
        ) as svc,
    ):
        resp = svc.http.post("/jobs", json={"prompt": "[slow] a sleepy cat"})
        job = svc.wait_final(resp.json()["id"])
        assert job["status"] == "failed"
        assert job["error"] == {
            "code": "gemini_timeout",
            "message": "Gemini failed 2 tries in a row (last: no answer within 1 s)",
        }
        assert [a["outcome"] for a in ledger(svc, job["id"])] == ["retry", "failed"]
        assert job["timings"]["gemini_calls"] == 2
        assert [c.hung_up for c in fake.calls] == [True] * 4, "2 attempts x 2 tries, none answered"


def test_200_jobs_with_a_tenth_of_workers_killed_mid_call_pay_for_200_calls(
    gemini: tuple[FakeGemini, Service],
) -> None:
    """Killed while its call is provably in flight (the fake holds it until the caller's
    process is gone): that call is never answered, the retry makes the one answered call.
    'Exactly 200' counts answered calls, the generations a real API would bill."""
    fake, svc = gemini
    fake.latency = 0.05
    victims = {i for i in range(200) if i % 20 in (4, 11)}  # 10 prompts, 10 photos
    before = limiter_stats(svc)
    first_call: set[int] = set()

    def hold_first_call_of_victims(call: Call) -> bool:
        i = index_of(call)
        if i in victims and i not in first_call:
            first_call.add(i)
            return True
        return False

    fake.hold_if(hold_first_call_of_victims)
    ids: dict[int, str] = {}
    known = threading.Condition()

    def submit_one(i: int) -> str:
        job_id = submit(svc, i)
        with known:
            ids[i] = job_id
            known.notify_all()
        return job_id

    def job_id(i: int) -> str:
        with known:  # (a call can arrive before its POST has been answered)
            assert known.wait_for(lambda: i in ids, timeout=60)
            return ids[i]

    def kill_victims() -> None:
        """Kill each victim's worker while the fake holds its call, as it arrives
        (a held call keeps one of the 4 permits)."""
        for _ in victims:
            call = fake.wait_held(timeout=120)
            [running] = [a for a in ledger(svc, job_id(index_of(call))) if not a["outcome"]]
            ray.kill(ray.get_actor(running["worker"], namespace=svc.namespace), no_restart=True)
            fake.wait_hung_up(call)  # the worker died with its call in flight

    with ThreadPoolExecutor(9) as pool:
        killer = pool.submit(kill_victims)
        order = list(pool.map(submit_one, range(200)))
        jobs = [svc.wait_final(job_id) for job_id in order]
        killer.result()

    assert [j["status"] for j in jobs] == ["succeeded"] * 200
    answered = Counter(index_of(c) for c in fake.answered())
    assert answered == Counter(range(200)), "every job's image was generated exactly once"
    assert sorted(index_of(c) for c in fake.calls if c.hung_up) == sorted(victims)
    assert len(fake.calls) == 220, "no call beyond the 200 answered and the 20 cut off"
    for i, job in enumerate(jobs):
        assert job["attempt"] == (2 if i in victims else 1), (i, ledger(svc, job["id"]))
        assert job["timings"]["gemini_calls"] == 1 and job["timings"]["gemini_cache_hit"] == 0
        assert job["timings"]["gemini_tokens"] == 1314
    stats = limiter_stats(svc)
    assert stats["reclaimed"] - before["reclaimed"] == 20, "each dead worker's permit came back"
    assert stats["in_flight"] == 0 and stats["max_in_flight"] <= 4

    fake.hold_if(None)
    again = run_jobs(svc, list(range(200)))
    assert [j["status"] for j in again] == ["succeeded"] * 200
    assert all(j["timings"]["gemini_cache_hit"] == 1 for j in again)
    assert all(j["timings"]["gemini_calls"] == 0 for j in again)
    assert len(fake.calls) == 220, "resubmitting the same 200 makes no call"


def test_never_more_than_4_calls_at_once_from_6_workers(
    gemini: tuple[FakeGemini, Service],
) -> None:
    fake, svc = gemini
    fake.latency = 0.3
    jobs = run_jobs(svc, [1001 + 2 * i for i in range(50)])  # 50 photos
    assert [j["status"] for j in jobs] == ["succeeded"] * 50
    assert fake.max_in_flight == 4, "the limit was reached and never passed"
    assert len(fake.calls) == 50
    assert limiter_stats(svc)["max_in_flight"] == 4
    workers = {ledger(svc, j["id"])[0]["worker"] for j in jobs}
    assert len(workers) == 6, "all 6 workers took jobs: the pool alone allowed 6 calls"


def test_a_burst_of_429s_slows_the_whole_fleet_and_every_job_succeeds(
    gemini: tuple[FakeGemini, Service],
) -> None:
    fake, svc = gemini
    fake.latency = 0.2
    retry_after = 1.0
    warm = run_jobs(svc, [2000 + 2 * i for i in range(8)])  # limits at rest
    assert all(j["status"] == "succeeded" for j in warm)
    throttled_before = limiter_stats(svc)["throttled"]
    first = len(fake.calls)
    fake.throttle(4, retry_after)  # the next 4 calls, i.e. the whole first wave
    jobs = run_jobs(svc, [2100 + 2 * i for i in range(30)])
    assert [j["status"] for j in jobs] == ["succeeded"] * 30

    calls = fake.calls[first:]
    throttled = [c for c in calls if c.status == 429]
    assert len(throttled) == 4
    assert len(calls) == 30 + 4, "each 429 cost exactly one more call: no storm"
    for t in throttled:
        assert t.finished is not None
        retry = next(c for c in calls if c.text == t.text and c.arrived > t.arrived)
        assert retry.arrived - t.finished >= retry_after, "Retry-After was honoured"
        # Only calls granted before the coordinator heard of this 429 may land in its
        # window: at most the other permits of the wave.
        inside = [c for c in calls if t.finished < c.arrived < t.finished + retry_after]
        assert len(inside) <= MAX_CONCURRENCY - 1, inside
    last_429 = max(t.finished for t in throttled if t.finished is not None)
    quiet = min(c.arrived for c in calls if c.arrived > last_429) - last_429
    assert quiet >= retry_after
    assert limiter_stats(svc)["throttled"] - throttled_before == 4
    print(f"\n429 burst: no call for {quiet:.2f} s after the last 429 (Retry-After 1 s)")


def test_refusals_end_failed_with_their_reason_in_the_job(
    gemini: tuple[FakeGemini, Service],
) -> None:
    fake, svc = gemini
    cases = {
        "[block] a dragon eating a knight": ("content_blocked", "declined this request"),
        "[no-image] a dragon": ("no_image", "without an image"),
    }
    for prompt, (code, words) in cases.items():
        resp = svc.http.post("/jobs", json={"prompt": prompt})
        job = svc.wait_final(resp.json()["id"])
        assert job["status"] == "failed", job
        assert job["error"]["code"] == code
        assert words in job["error"]["message"]
        assert job["attempt"] == 1, "a refusal is not retried"
        assert [a["outcome"] for a in ledger(svc, job["id"])] == ["failed"]
        assert job["timings"]["gemini_calls"] == 1
    assert len(fake.calls) == 2


def test_the_api_key_is_in_no_log_job_record_or_file(
    gemini: tuple[FakeGemini, Service],
) -> None:
    fake, svc = gemini
    fake.fail(1, 500)  # a retry, so a worker logs a warning about this job
    ok = svc.wait_final(svc.http.post("/jobs", json={"prompt": "a fox"}).json()["id"])
    assert ok["status"] == "succeeded" and ok["timings"]["gemini_calls"] == 2
    blocked = svc.wait_final(svc.http.post("/jobs", json={"prompt": "[block] a fox"}).json()["id"])
    assert blocked["status"] == "failed"
    records = [
        svc.http.get(path).text
        for job in (ok, blocked)
        for path in (f"/jobs/{job['id']}", f"/jobs/{job['id']}/attempts")
    ]
    records += [svc.http.get("/jobs").text, svc.http.get("/stats").text]
    records.append(str(limiter_stats(svc)))
    assert not [r for r in records if API_KEY in r]

    key = API_KEY.encode()
    node = ray._private.worker._global_node  # this test session's Ray: its log folder
    assert node is not None
    ray_logs = Path(node.get_logs_dir_path())
    files = [f for root in (svc.data_dir, ray_logs) for f in root.rglob("*") if f.is_file()]
    assert not [f for f in files if key in f.read_bytes()]
    # The logs read were the right ones: a worker logged the retry of this very job.
    retry_line = f"job {ok['id']}: Gemini call 1/4 failed".encode()
    assert [f for f in files if retry_line in f.read_bytes()], "worker logs not found"
