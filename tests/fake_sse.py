"""A scripted GET /jobs/j/events for the clients' reconnect tests (httpx.MockTransport).

The first stream ends before the job does, as the server closes a stream after
SSE_MAX_SECONDS; the second replays the history and ends with the final job.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

TOKEN = "t0ken"
STREAMS: list[list[tuple[str, dict[str, Any]]]] = [
    [("status", {"status": "queued", "attempt": 0})],  # closed early, no final job
    [
        ("status", {"status": "queued", "attempt": 0}),  # replayed by the server
        ("status", {"status": "running", "attempt": 1}),
        ("status", {"status": "succeeded", "attempt": 1}),
        ("job", {"id": "j", "status": "succeeded"}),
    ],
]


class ClosedEarlyEvents:
    """Serves STREAMS in turn, one per request; `served` holds the requests."""

    def __init__(self) -> None:
        self.served: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/jobs/j/events"
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        events = STREAMS[len(self.served)]
        self.served.append(request)
        body = "".join(f"event: {e}\ndata: {json.dumps(d)}\n\n" for e, d in events)
        return httpx.Response(200, text=f"retry: 1000\n\n{body}")
