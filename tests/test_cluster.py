"""More than one node: pipeline workers spread out, a lost node loses and duplicates no job,
and one-machine settings are refused where they cannot work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from scribble_ray.jobs import ARTIFACT_NAMES, INPUT_NAME
from scribble_ray.preflight import check_cluster
from scribble_ray.settings import Settings
from tests import s3_fixtures
from tests.conftest import AWS_TEST_ENV, ROOT, pg_schema
from tests.s3_fixtures import S3Server

s3_server = s3_fixtures.s3_server
PREFIX = "cluster"
SCENARIO_TIMEOUT = 240.0


# -- the preflight, as a pure function -------------------------------------------------


def settings(**args: Any) -> Settings:
    return Settings.resolve({"data_dir": "/tmp/scribble-preflight", **args}, env={})


SHARED = {
    "store_url": "postgresql://u@db/scribble",
    "blob_url": "s3://bucket/prefix",
    "api_tokens_file": "/etc/scribble-ray/tokens",  # a cluster refuses the open mode
}


def test_one_node_accepts_the_embedded_defaults() -> None:
    check_cluster(settings(), alive_nodes=1)
    check_cluster(settings(), alive_nodes=0)  # not connected to Ray at all


def test_several_nodes_refuse_sqlite_and_a_local_folder() -> None:
    with pytest.raises(ValueError) as refused:
        check_cluster(settings(), alive_nodes=2)
    message = str(refused.value)
    assert "2 nodes" in message
    assert "store_url is a SQLite file" in message and "postgresql://" in message
    assert "blob_url is a local folder" in message and "s3://" in message


@pytest.mark.parametrize(
    ("override", "named", "not_named"),
    [
        ({"store_url": "sqlite:////tmp/x.db"}, "store_url", "blob_url"),
        ({"blob_url": "file:///tmp/blobs"}, "blob_url", "store_url"),
    ],
)
def test_several_nodes_name_only_what_is_wrong(
    override: dict[str, str], named: str, not_named: str
) -> None:
    with pytest.raises(ValueError, match=named) as refused:
        check_cluster(settings(**{**SHARED, **override}), alive_nodes=3)
    assert not_named not in str(refused.value)


def test_several_nodes_refuse_the_open_mode() -> None:
    with pytest.raises(ValueError, match="no API tokens") as refused:
        check_cluster(settings(**{**SHARED, "api_tokens_file": None}), alive_nodes=2)
    assert "store_url" not in str(refused.value) and "blob_url" not in str(refused.value)
    check_cluster(settings(api_tokens="ops=a-long-enough-token"), alive_nodes=1)


def test_several_nodes_accept_postgres_and_s3() -> None:
    check_cluster(settings(**SHARED), alive_nodes=3)


# -- a real three-node cluster, in a subprocess ----------------------------------------


@pytest.fixture(scope="module")
def cluster_run(
    s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[dict[str, Any], list[str]]]:
    """Run tests/cluster_scenario.py once; its JSON report and the bucket's keys after."""
    out = tmp_path_factory.mktemp("cluster") / "result.json"
    bucket = s3_server.new_bucket()
    with pg_schema() as store_url:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.cluster_scenario",
                "--store-url",
                store_url,
                "--blob-url",
                f"s3://{bucket}/{PREFIX}",
                "--s3-endpoint-url",
                s3_server.endpoint_url,
                "--out",
                str(out),
            ],
            cwd=ROOT,
            env={**os.environ, **AWS_TEST_ENV, "RAY_USAGE_STATS_ENABLED": "0"},
            capture_output=True,
            text=True,
            timeout=SCENARIO_TIMEOUT,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-6000:]
        yield json.loads(out.read_text()), s3_server.keys(bucket)


def test_preflight_refuses_one_machine_settings_on_the_cluster(
    cluster_run: tuple[dict[str, Any], list[str]],
) -> None:
    refusals = cluster_run[0]["preflight"]
    assert "3 nodes" in refusals["defaults"]
    assert "SQLite" in refusals["defaults"] and "local folder" in refusals["defaults"]
    assert "local folder" in refusals["local_folder"]
    assert "SQLite" not in refusals["local_folder"]


def test_jobs_run_on_several_nodes(cluster_run: tuple[dict[str, Any], list[str]]) -> None:
    result = cluster_run[0]
    succeeded_on = {
        a["node"]
        for job in result["jobs"].values()
        for a in job["attempts"]
        if a["outcome"] == "succeeded"
    }
    assert len(succeeded_on) >= 2, succeeded_on
    pool_nodes = {w["node"] for w in result["pool_before_removal"] if w["node"]}
    assert len(pool_nodes) >= 2, result["pool_before_removal"]
    # The queue grew the pool past pool_min (3), on the nodes it had.
    workers = {a["worker"] for job in result["jobs"].values() for a in job["attempts"]}
    assert len(workers) > 3, workers


def test_a_lost_node_loses_and_duplicates_no_job(
    cluster_run: tuple[dict[str, Any], list[str]],
) -> None:
    result, keys = cluster_run
    jobs, victim = result["jobs"], result["victim"]
    assert victim["node"] in result["nodes"]["workers"]
    assert victim["node"] != result["coordinator_node"]
    assert result["overlapping_attempts"] == 0
    assert [j["status"] for j in jobs.values()] == ["succeeded"] * len(jobs)
    assert result["counts"]["by_status"]["succeeded"] == len(jobs) == 60

    # The job caught running on the lost node was moved, and ran to the end elsewhere.
    moved = jobs[victim["job"]]["attempts"]
    assert (moved[0]["node"], moved[0]["outcome"]) == (victim["node"], "lost")
    assert moved[-1]["outcome"] == "succeeded" and moved[-1]["node"] != victim["node"]
    for job in jobs.values():
        outcomes = [a["outcome"] for a in job["attempts"]]
        assert outcomes[-1] == "succeeded" and outcomes.count("succeeded") == 1
        assert set(outcomes[:-1]) <= {"lost"}, job  # only the node loss cost attempts
        assert all(a["node"] == victim["node"] for a in job["attempts"][:-1]), job
    # Nothing runs on the dead node any more; the pool refilled on the others.
    assert victim["node"] not in {w["node"] for w in result["pool_after"]}
    assert len(result["pool_after"]) >= 3

    # Each job left exactly its input and two artifacts in S3, retries included.
    per_job = Counter(key.split("/")[2] for key in keys)
    assert per_job == Counter(dict.fromkeys(jobs, 1 + len(ARTIFACT_NAMES)))
    assert all(
        key.rsplit("/", 1)[1] in {INPUT_NAME, *ARTIFACT_NAMES} and key.startswith(f"{PREFIX}/jobs/")
        for key in keys
    )
