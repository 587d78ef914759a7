"""notebooks/batch_reprocess.ipynb (issue #7), executed top to bottom against a live service."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell

from tests.conftest import DATA, ROOT, Service, start_service, stop_service

NOTEBOOK = ROOT / "notebooks" / "batch_reprocess.ipynb"
NEW_OPTIONS = {"page_size": "Letter", "detail": "high"}  # the notebook's NEW_OPTIONS
MIN_JOBS = 3  # the notebook's MIN_JOBS
MARK = "RESULTS="


@pytest.fixture(scope="module")
def svc(serve_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    # The scripted renderer draws a page at once: the notebook, not OpenCV, is under test.
    service = start_service(
        serve_url, tmp_path_factory.mktemp("notebook"), renderer="tests.fakes:scripted"
    )
    yield service
    stop_service(service)


def past_job(svc: Service, **options: str) -> dict[str, Any]:
    resp = svc.submit_photo(DATA / "horse.png", **options)
    assert resp.status_code == 202, resp.text
    job = svc.wait_final(resp.json()["id"])
    assert job["status"] == "succeeded"
    return job


def run_notebook(monkeypatch: pytest.MonkeyPatch, url: str) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # One extra cell hands the notebook's `results` back as JSON on stdout.
    nb.cells.append(new_code_cell(f"import json\nprint({MARK!r} + json.dumps(results))"))
    monkeypatch.setenv("SCRIBBLE_URL", url)  # the kernel inherits this environment
    NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    ).execute()
    return nb


def stdout(cell: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stdout")


def test_notebook_reprocesses_selected_jobs_with_lineage(
    svc: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One past job matches the notebook's selection (A4), one does not (Letter): the
    # notebook must pick the first and submit MIN_JOBS - 1 sample photos to make up.
    matching = past_job(svc, page_size="A4", detail="low")
    other = past_job(svc, page_size="Letter")

    nb = run_notebook(monkeypatch, svc.url)

    out = stdout(nb.cells[-1])
    assert MARK in out, out
    results: list[dict[str, Any]] = json.loads(out.split(MARK, 1)[1])
    assert len(results) == MIN_JOBS
    sources = [r["source_id"] for r in results]
    assert matching["id"] in sources
    assert other["id"] not in sources
    assert len(set(sources)) == MIN_JOBS
    for row in results:
        assert row["status"] == "succeeded", row
        assert row["new_id"] != row["source_id"]
        assert (row["page_size"], row["detail"]) == (NEW_OPTIONS["page_size"], "high")
        new = svc.http.get(f"/jobs/{row['new_id']}").json()
        assert new["status"] == "succeeded"
        assert new["source_job_id"] == row["source_id"]
        assert new["lane"] == "batch"
        assert {k: new["options"][k] for k in NEW_OPTIONS} == NEW_OPTIONS
        source = svc.http.get(f"/jobs/{row['source_id']}").json()
        assert source["source_job_id"] is None
        assert source["options"]["page_size"] == "A4"  # the source is left as it was
    assert len({r["new_id"] for r in results}) == MIN_JOBS

    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    outputs = [o for cell in code for o in cell.outputs]
    # The before/after grid was displayed as an image, the bar drew, the summary counted.
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert any("reprocessing" in o.get("text", "") for o in outputs if o.get("name") == "stderr")
    assert any(f"{MIN_JOBS} of {MIN_JOBS} succeeded, 0 did not" in stdout(c) for c in code)
    assert not [o for o in outputs if o.get("output_type") == "error"]
