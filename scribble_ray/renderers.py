"""Line-art renderers, chosen by the `renderer` setting: local, gemini, or module:attr."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from scribble_ray.jobs import Job, Kind, PermanentJobError
from scribble_ray.render.images import decode_image
from scribble_ray.render.lineart import SOURCE_SIDE, render_lineart
from scribble_ray.settings import Settings

if TYPE_CHECKING:
    from scribble_ray.limits import CallGate


class Renderer(Protocol):
    """Turns a job (and its uploaded bytes, for image jobs) into line art: 0 ink, 255 paper."""

    name: str
    supports_text: bool

    def render(self, job: Job, source: bytes | None) -> np.ndarray: ...


@runtime_checkable
class ReportsUsage(Protocol):
    """A renderer that counts what a render cost (paid calls, cache hits, tokens)."""

    def usage(self, job: Job) -> dict[str, float]:
        """Numbers for the job's `timings`, from its last render (also a failed one)."""
        ...


class LocalRenderer:
    """OpenCV line art on the local CPU: no keys, no network."""

    name = "local"
    supports_text = False

    def __init__(self, settings: Settings) -> None:
        self.max_pixels = settings.max_pixels

    def render(self, job: Job, source: bytes | None) -> np.ndarray:
        if job.kind is not Kind.IMAGE or source is None:
            raise PermanentJobError(
                "text prompts need the Gemini renderer (set SCRIBBLE_RENDERER=gemini)",
                code="renderer_unavailable",
            )
        rgb = decode_image(source, max_pixels=self.max_pixels, draft_side=SOURCE_SIDE)
        return render_lineart(rgb, job.options.detail, line_weight=job.options.line_weight)


def make_renderer(settings: Settings, *, gate: CallGate | None = None) -> Renderer:
    """`gate` paces paid calls (the coordinator's cluster-wide limits, in a worker)."""
    if settings.renderer == "local":
        return LocalRenderer(settings)
    if settings.renderer == "gemini":
        from scribble_ray.render.gemini import GeminiRenderer

        return GeminiRenderer(settings, gate=gate)
    if ":" in settings.renderer:  # a plug-in factory, called with the settings
        renderer: Renderer = import_attr(settings.renderer)(settings)
        return renderer
    raise ValueError(f"unknown renderer {settings.renderer!r}: use local, gemini or module:attr")


def import_attr(spec: str) -> Any:
    """The object named by "package.module:attr" (plug-ins)."""
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)
