"""Pure logic: settings resolution, job transitions, backoff, blob keys."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from scribble_ray.blobs import check_key, open_blobs
from scribble_ray.jobs import (
    FINAL_STATES,
    JobOptions,
    PageSize,
    Status,
    backoff_seconds,
    can_transition,
)
from scribble_ray.settings import Settings


def test_args_override_environment_which_overrides_defaults(tmp_path: Path) -> None:
    env = {
        "SCRIBBLE_POOL_MAX": "5",
        "SCRIBBLE_RENDERER": "gemini",
        "SCRIBBLE_DATA_DIR": str(tmp_path),
    }
    settings = Settings.resolve({"pool_max": 3}, env=env)
    assert settings.pool_max == 3  # arg wins over env
    assert settings.renderer == "gemini"  # env wins over default
    assert settings.lease_seconds == 15.0  # default
    assert settings.store_url == f"sqlite:///{tmp_path / 'jobs.db'}"
    assert settings.blob_url == f"file://{tmp_path / 'blobs'}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"pool_min": 3, "pool_max": 2}, "pool_min"),
        ({"store_url": "mysql://x"}, "store_url"),
        ({"blob_url": "ftp://x"}, "blob_url"),
        ({"pool_max": "many"}, "pool_max"),
        ({"no_such_setting": 1}, "unknown setting"),
    ],
)
def test_bad_settings_are_refused_with_the_name(args: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.resolve(args, env={})


def test_public_settings_mask_database_passwords() -> None:
    settings = Settings.resolve({"store_url": "postgresql://app:s3cret@db:5432/jobs"}, env={})
    assert "s3cret" not in str(settings.public())
    assert settings.public()["store_url"] == "postgresql://app:***@db:5432/jobs"


def test_state_machine_matches_the_design() -> None:
    assert can_transition(Status.QUEUED, Status.RUNNING)
    assert can_transition(Status.RUNNING, Status.QUEUED)  # retry or rescue
    assert not can_transition(Status.QUEUED, Status.SUCCEEDED)  # only a claimed attempt succeeds
    for final in FINAL_STATES:
        assert final.final
        assert not any(can_transition(final, s) for s in Status)


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    rng = random.Random(7)
    firsts = [backoff_seconds(1, 1.0, 60.0, rng) for _ in range(200)]
    thirds = [backoff_seconds(3, 1.0, 60.0, rng) for _ in range(200)]
    assert all(0.5 <= d <= 1.0 for d in firsts)
    assert all(2.0 <= d <= 4.0 for d in thirds)
    assert len({round(d, 6) for d in thirds}) > 100  # jittered, not lock-step
    assert max(backoff_seconds(30, 1.0, 60.0, rng) for _ in range(50)) <= 60.0


def test_options_round_trip_and_reject_unknown_values() -> None:
    opts = JobOptions.from_dict({"page_size": "Letter", "detail": "high", "title": "Hi"})
    assert JobOptions.from_dict(opts.to_dict()) == opts
    assert opts.page_size is PageSize.LETTER
    with pytest.raises(ValueError):
        JobOptions.from_dict({"page_size": "A3"})


def test_line_weight_option_defaults_parses_and_is_bounded() -> None:
    assert JobOptions.from_dict({}).line_weight == 1.0
    assert JobOptions.from_dict({"line_weight": ""}).line_weight == 1.0  # an empty form field
    opts = JobOptions.from_dict({"line_weight": "2.5"})  # form fields are text
    assert opts.line_weight == 2.5
    assert JobOptions.from_dict(opts.to_dict()) == opts
    assert JobOptions.from_dict({"line_weight": 0.5}).line_weight == 0.5  # JSON numbers
    for bad in ["0.4", 3.5, "thick", "nan", "inf", True, [1.0]]:
        with pytest.raises(ValueError, match="line_weight"):
            JobOptions.from_dict({"line_weight": bad})


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs", "jobs/../x", "a//b", "", "jobs/x y"])
def test_blob_keys_cannot_escape_the_store(key: str) -> None:
    with pytest.raises(ValueError):
        check_key(key)


def test_local_blobs_overwrite_and_list(tmp_path: Path) -> None:
    blobs = open_blobs(f"file://{tmp_path}")
    blobs.put("jobs/a/edge.png", b"one", "image/png")
    blobs.put("jobs/a/edge.png", b"two", "image/png")  # a retry overwrites
    assert blobs.get("jobs/a/edge.png") == b"two"
    assert blobs.list("jobs/") == ["jobs/a/edge.png"]
    assert b"".join(blobs.open_stream("jobs/a/edge.png", chunk_size=1)) == b"two"
    with pytest.raises(KeyError):
        blobs.get("jobs/b/edge.png")
