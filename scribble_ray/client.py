"""A small Python client for the HTTP API (used by the CLI and the notebooks)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import httpx

FINAL = {"succeeded", "failed", "cancelled"}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class Client:
    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        *,
        timeout: float = 60.0,
        token: str | None = None,
    ) -> None:
        """`token`: an API token (default: the SCRIBBLE_API_TOKEN environment variable)."""
        token = token or os.environ.get("SCRIBBLE_API_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout, headers=headers)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def submit(
        self,
        image: str | Path | bytes | None = None,
        *,
        prompt: str | None = None,
        idempotency_key: str | None = None,
        **options: str,
    ) -> dict[str, Any]:
        """Submit a photo (path or bytes) or a prompt; options: page_size, detail, title."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        if image is not None:
            data = image if isinstance(image, bytes) else Path(image).read_bytes()
            name = "upload" if isinstance(image, bytes) else Path(image).name
            resp = self.http.post(
                "/jobs", files={"image": (name, data)}, data=options, headers=headers
            )
        elif prompt is not None:
            resp = self.http.post("/jobs", json={"prompt": prompt, **options}, headers=headers)
        else:
            raise ValueError("give an image or a prompt")
        return self._json(resp)

    def get(self, job_id: str) -> dict[str, Any]:
        return self._json(self.http.get(f"/jobs/{job_id}"))

    def wait(self, job_id: str, timeout: float = 600.0, on_change: Any = None) -> dict[str, Any]:
        """Wait for the job to end with one Server-Sent Events stream: one request in all.

        `on_change(change)` is called with each status change as it happens. The server
        closes a stream after a while (under the proxy's request timeout); the wait then
        goes on with a new stream, and changes already reported are not repeated.
        """
        deadline = time.monotonic() + timeout
        reported: set[tuple[str, int]] = set()
        while True:
            job = self._wait_stream(job_id, deadline - time.monotonic(), on_change, reported)
            if job is not None:
                return job
            if time.monotonic() >= deadline:
                return self.get(job_id)  # out of time: report what the server has

    def _wait_stream(
        self, job_id: str, timeout: float, on_change: Any, reported: set[tuple[str, int]]
    ) -> dict[str, Any] | None:
        """One SSE stream: the final job, or None when the server closed the stream first."""
        with self.http.stream("GET", f"/jobs/{job_id}/events", timeout=timeout) as resp:
            if resp.status_code >= 400:
                resp.read()
                self._json(resp)
            event = None
            for line in resp.iter_lines():
                if line.startswith("event: "):
                    event = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    data = json.loads(line.removeprefix("data: "))
                    if event == "job":
                        return dict(data)
                    key = (str(data.get("status")), int(data.get("attempt") or 0))
                    if on_change and key not in reported:
                        on_change(data)
                    reported.add(key)
        return None

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._json(self.http.post(f"/jobs/{job_id}/cancel"))

    def attempts(self, job_id: str) -> list[dict[str, Any]]:
        return list(self._json(self.http.get(f"/jobs/{job_id}/attempts"))["attempts"])

    def reprocess(
        self, job_ids: list[str], *, lane: str = "batch", **options: str
    ) -> list[dict[str, Any]]:
        """Run past jobs again with new options (one request); new jobs point to their source."""
        body = {"job_ids": job_ids, "lane": lane, **options}
        return list(self._json(self.http.post("/jobs/reprocess", json=body))["jobs"])

    def list(self, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        return list(self._json(self.http.get("/jobs", params=params))["jobs"])

    def download(self, job_id: str, name: str, dest: str | Path) -> Path:
        resp = self.http.get(f"/jobs/{job_id}/artifacts/{name}", follow_redirects=True)
        if resp.status_code >= 400:
            self._json(resp)  # raises the API's error
        path = Path(dest)
        if path.is_dir():
            path = path / name
        path.write_bytes(resp.content)
        return path

    @staticmethod
    def _json(resp: httpx.Response) -> Any:
        if resp.status_code >= 400:
            try:
                err = resp.json()["error"]
                raise ApiError(resp.status_code, err["code"], err["message"])
            except (ValueError, KeyError, TypeError):
                raise ApiError(resp.status_code, "http_error", resp.text[:300]) from None
        return resp.json()
