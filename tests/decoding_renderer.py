"""A plug-in renderer (SCRIBBLE_RENDERER=tests.decoding_renderer:decoding) for bad-input tests.

Photos get the real safe decode and OpenCV line art (so awkward images really must
decode); prompts get a plain page (no Gemini here); a "sleep:S" title holds the worker.
"""

from __future__ import annotations

import time

import numpy as np

from scribble_ray.jobs import Job, Kind
from scribble_ray.renderers import LocalRenderer
from scribble_ray.settings import Settings


class DecodingRenderer:
    name = "decoding"
    supports_text = True

    def __init__(self, settings: Settings) -> None:
        self.local = LocalRenderer(settings)

    def render(self, job: Job, source: bytes | None) -> np.ndarray:
        title = job.options.title or ""
        if title.startswith("sleep:"):
            time.sleep(float(title.removeprefix("sleep:")))
        if job.kind is Kind.IMAGE:
            return self.local.render(job, source)
        page = np.full((120, 160), 255, np.uint8)
        page[20:100, 30] = page[20:100, 130] = 0
        return page


def decoding(settings: Settings) -> DecodingRenderer:
    return DecodingRenderer(settings)
