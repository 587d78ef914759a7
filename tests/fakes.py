"""A plug-in renderer for tests (SCRIBBLE_RENDERER=tests.fakes:scripted): behaviour by job title.

"sleep:S"   work for S seconds, then draw a page
"crash"     kill the worker process (every attempt)
"fail"      fail the job at once (a permanent error)
anything    draw a page at once
"""

from __future__ import annotations

import os
import time

import numpy as np

from scribble_ray.jobs import Job, PermanentJobError
from scribble_ray.settings import Settings


class ScriptedRenderer:
    name = "scripted"
    supports_text = True

    def render(self, job: Job, source: bytes | None) -> np.ndarray:
        title = job.options.title or ""
        if title == "crash":
            os._exit(13)
        if title == "fail":
            raise PermanentJobError("scripted failure", code="scripted_failure")
        if title.startswith("sleep:"):
            time.sleep(float(title.removeprefix("sleep:")))
        page = np.full((120, 160), 255, np.uint8)
        page[20:100, 30] = page[20:100, 130] = 0
        page[20, 30:131] = page[100, 30:131] = 0
        return page


def scripted(settings: Settings) -> ScriptedRenderer:
    return ScriptedRenderer()
