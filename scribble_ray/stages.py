"""One job's stages: decode, render line art, PNG, PDF, store. No Ray, no job store."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from scribble_ray.blobs import BlobStore
from scribble_ray.jobs import Job, JobError, artifact_key
from scribble_ray.render.lineart import encode_png
from scribble_ray.render.pdf import make_pdf
from scribble_ray.renderers import Renderer, ReportsUsage, import_attr
from scribble_ray.tracing import StageSpan

STAGES = ("fetch", "render", "encode_png", "pdf", "store")


class Aborted(JobError):
    """The attempt lost its lease (cancelled or rescued): stop, write nothing more."""

    code = "aborted"


@dataclass
class StageClock:
    """Per-stage durations in seconds, as shown in the job's `timings`."""

    timings: dict[str, float] = field(default_factory=dict)
    check: Callable[[], bool] = lambda: True

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if not self.check():
            raise Aborted(f"attempt no longer current before stage {name}")
        with StageSpan(name) as span:  # a child of the attempt's span, if tracing is on
            start = time.perf_counter()
            try:
                yield
            finally:
                self.timings[name] = span.seconds = round(time.perf_counter() - start, 4)


def run_stages(job: Job, renderer: Renderer, blobs: BlobStore, clock: StageClock) -> dict[str, str]:
    """Run a job's stages; returns artifact name -> blob key. Raises JobError on failure."""
    source = None
    if job.input_key:
        with clock.stage("fetch"):
            try:
                source = blobs.get(job.input_key)
            except KeyError:
                raise JobError(f"input {job.input_key} is missing", code="input_missing") from None
    with clock.stage("render"):
        try:
            lineart = renderer.render(job, source)
        finally:  # what the attempt cost is recorded even when it failed
            if isinstance(renderer, ReportsUsage):
                clock.timings.update(renderer.usage(job))
    with clock.stage("encode_png"):
        png = encode_png(lineart)
    with clock.stage("pdf"):
        pdf = make_pdf(png, page_size=job.options.page_size, title=job.options.title)
    artifacts = {
        "edge.png": artifact_key(job.id, "edge.png"),
        "coloring_page.pdf": artifact_key(job.id, "coloring_page.pdf"),
    }
    with clock.stage("store"):
        blobs.put(artifacts["edge.png"], png, "image/png")
        blobs.put(artifacts["coloring_page.pdf"], pdf, "application/pdf")
    return artifacts


StagesFunction = Callable[[Job, Renderer, BlobStore, StageClock], dict[str, str]]


def stages_function(spec: str) -> StagesFunction:
    """What a worker runs for a job: `run_stages`, or the `stages` setting's
    "module:attr" replacement (the benchmarks' no-op pipeline)."""
    return import_attr(spec) if spec else run_stages  # type: ignore[no-any-return]
