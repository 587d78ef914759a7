"""Python clients for the HTTP API: `Client` (used by the CLI and the notebooks) and
`AsyncClient`, with the same methods and semantics for asyncio programs.

Everything but the I/O is shared: how requests are built, how answers and errors are
read, and the bookkeeping of a wait over Server-Sent Events (`_Wait`).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

FINAL = {"succeeded", "failed", "cancelled"}
DEFAULT_URL = "http://127.0.0.1:8000"


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


# -- the shared, I/O-free part ----------------------------------------------------------


def _client_options(url: str, timeout: float, token: str | None) -> dict[str, Any]:
    """httpx client arguments; `token` defaults to the SCRIBBLE_API_TOKEN variable."""
    token = token or os.environ.get("SCRIBBLE_API_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return {"base_url": url.rstrip("/"), "timeout": timeout, "headers": headers}


def _read_image(image: str | Path | bytes) -> tuple[str, bytes]:
    """(file name, bytes) of an upload given as a path or as bytes."""
    if isinstance(image, bytes):
        return "upload", image
    return Path(image).name, Path(image).read_bytes()


def _submit_request(
    upload: tuple[str, bytes] | None,
    prompt: str | None,
    idempotency_key: str | None,
    options: dict[str, str],
) -> dict[str, Any]:
    """Keyword arguments of the `POST /jobs` request: multipart for a photo, JSON for a prompt."""
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    if upload is not None:
        return {"files": {"image": upload}, "data": options, "headers": headers}
    if prompt is not None:
        return {"json": {"prompt": prompt, **options}, "headers": headers}
    raise ValueError("give an image or a prompt")


def _reprocess_body(job_ids: list[str], lane: str, options: dict[str, str]) -> dict[str, Any]:
    return {"job_ids": job_ids, "lane": lane, **options}


def _list_params(
    status: str | None, limit: int, before: str | datetime | None, owner: str | None
) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": limit}
    if status:
        params["status"] = status
    if before:
        params["before"] = before.isoformat() if isinstance(before, datetime) else before
    if owner:
        params["owner"] = owner
    return params


def _artifact_path(dest: str | Path, name: str) -> Path:
    path = Path(dest)
    return path / name if path.is_dir() else path


def _json(resp: httpx.Response) -> Any:
    """The answer's JSON; an error answer raises ApiError with the API's code and message.
    (A streamed answer must have been read first.)"""
    if resp.status_code >= 400:
        try:
            err = resp.json()["error"]
            raise ApiError(resp.status_code, err["code"], err["message"])
        except (ValueError, KeyError, TypeError):
            raise ApiError(resp.status_code, "http_error", resp.text[:300]) from None
    return resp.json()


class _Wait:
    """One wait for a job's end over one or more SSE streams of `GET /jobs/{id}/events`.

    The server closes a stream after a while (under the proxy's request timeout); the
    wait goes on with a new stream, and changes already reported are not repeated."""

    def __init__(self, job_id: str, timeout: float) -> None:
        self.path = f"/jobs/{job_id}/events"
        self.deadline = time.monotonic() + timeout
        self.reported: set[tuple[str, int]] = set()
        self._event: str | None = None

    def next_stream(self) -> float | None:
        """The timeout of the next stream, or None when the wait is out of time."""
        self._event = None
        left = self.deadline - time.monotonic()
        return left if left > 0 else None

    def feed(self, line: str) -> tuple[str, dict[str, Any]] | None:
        """One line of a stream: ("job", the final job), ("change", a status change not
        reported before), or None."""
        if line.startswith("event: "):
            self._event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data = dict(json.loads(line.removeprefix("data: ")))
            if self._event == "job":
                return "job", data
            key = (str(data.get("status")), int(data.get("attempt") or 0))
            if key not in self.reported:
                self.reported.add(key)
                return "change", data
        return None


# -- the clients -------------------------------------------------------------------------


class Client:
    def __init__(
        self, url: str = DEFAULT_URL, *, timeout: float = 60.0, token: str | None = None
    ) -> None:
        """`token`: an API token (default: the SCRIBBLE_API_TOKEN environment variable)."""
        self.http = httpx.Client(**_client_options(url, timeout, token))

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
        upload = _read_image(image) if image is not None else None
        request = _submit_request(upload, prompt, idempotency_key, options)
        return dict(_json(self.http.post("/jobs", **request)))

    def get(self, job_id: str) -> dict[str, Any]:
        return dict(_json(self.http.get(f"/jobs/{job_id}")))

    def wait(self, job_id: str, timeout: float = 600.0, on_change: Any = None) -> dict[str, Any]:
        """Wait for the job to end with one Server-Sent Events stream: one request in all.

        `on_change(change)` is called with each status change as it happens. The server
        closes a stream after a while (under the proxy's request timeout); the wait then
        goes on with a new stream, and changes already reported are not repeated.
        """
        wait = _Wait(job_id, timeout)
        while (left := wait.next_stream()) is not None:
            with self.http.stream("GET", wait.path, timeout=left) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    _json(resp)
                for line in resp.iter_lines():
                    item = wait.feed(line)
                    if item and item[0] == "job":
                        return item[1]
                    if item and on_change:
                        on_change(item[1])
        return self.get(job_id)  # out of time: report what the server has

    def cancel(self, job_id: str) -> dict[str, Any]:
        return dict(_json(self.http.post(f"/jobs/{job_id}/cancel")))

    def attempts(self, job_id: str) -> list[dict[str, Any]]:
        return list(_json(self.http.get(f"/jobs/{job_id}/attempts"))["attempts"])

    def reprocess(
        self, job_ids: list[str], *, lane: str = "batch", **options: str
    ) -> list[dict[str, Any]]:
        """Run past jobs again with new options (one request); new jobs point to their source."""
        body = _reprocess_body(job_ids, lane, options)
        return list(_json(self.http.post("/jobs/reprocess", json=body))["jobs"])

    def list(
        self,
        status: str | None = None,
        limit: int = 50,
        *,
        before: str | datetime | None = None,
        owner: str | None = None,
    ) -> list[dict[str, Any]]:
        """The caller's jobs, newest first; page with `before` = the last job's created_at."""
        params = _list_params(status, limit, before, owner)
        return list(_json(self.http.get("/jobs", params=params))["jobs"])

    def download(self, job_id: str, name: str, dest: str | Path) -> Path:
        resp = self.http.get(f"/jobs/{job_id}/artifacts/{name}", follow_redirects=True)
        if resp.status_code >= 400:
            _json(resp)  # raises the API's error
        path = _artifact_path(dest, name)
        path.write_bytes(resp.content)
        return path


class AsyncClient:
    """`Client` for asyncio: the same methods, awaited; `async with AsyncClient(url) as c`.

    `on_change` of `wait` may be a function or a coroutine function."""

    def __init__(
        self, url: str = DEFAULT_URL, *, timeout: float = 60.0, token: str | None = None
    ) -> None:
        self.http = httpx.AsyncClient(**_client_options(url, timeout, token))

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def submit(
        self,
        image: str | Path | bytes | None = None,
        *,
        prompt: str | None = None,
        idempotency_key: str | None = None,
        **options: str,
    ) -> dict[str, Any]:
        """Submit a photo (path or bytes) or a prompt; options: page_size, detail, title."""
        upload = await asyncio.to_thread(_read_image, image) if image is not None else None
        request = _submit_request(upload, prompt, idempotency_key, options)
        return dict(_json(await self.http.post("/jobs", **request)))

    async def get(self, job_id: str) -> dict[str, Any]:
        return dict(_json(await self.http.get(f"/jobs/{job_id}")))

    async def wait(
        self, job_id: str, timeout: float = 600.0, on_change: Any = None
    ) -> dict[str, Any]:
        """Wait for the job to end with one Server-Sent Events stream (see `Client.wait`)."""
        wait = _Wait(job_id, timeout)
        while (left := wait.next_stream()) is not None:
            async with self.http.stream("GET", wait.path, timeout=left) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    _json(resp)
                async for line in resp.aiter_lines():
                    item = wait.feed(line)
                    if item and item[0] == "job":
                        return item[1]
                    if item and on_change:
                        reported = on_change(item[1])
                        if inspect.isawaitable(reported):
                            await reported
        return await self.get(job_id)  # out of time: report what the server has

    async def cancel(self, job_id: str) -> dict[str, Any]:
        return dict(_json(await self.http.post(f"/jobs/{job_id}/cancel")))

    async def attempts(self, job_id: str) -> list[dict[str, Any]]:
        return list(_json(await self.http.get(f"/jobs/{job_id}/attempts"))["attempts"])

    async def reprocess(
        self, job_ids: list[str], *, lane: str = "batch", **options: str
    ) -> list[dict[str, Any]]:
        """Run past jobs again with new options (one request); new jobs point to their source."""
        body = _reprocess_body(job_ids, lane, options)
        return list(_json(await self.http.post("/jobs/reprocess", json=body))["jobs"])

    async def list(
        self,
        status: str | None = None,
        limit: int = 50,
        *,
        before: str | datetime | None = None,
        owner: str | None = None,
    ) -> list[dict[str, Any]]:
        """The caller's jobs, newest first; page with `before` = the last job's created_at."""
        params = _list_params(status, limit, before, owner)
        return list(_json(await self.http.get("/jobs", params=params))["jobs"])

    async def download(self, job_id: str, name: str, dest: str | Path) -> Path:
        resp = await self.http.get(f"/jobs/{job_id}/artifacts/{name}", follow_redirects=True)
        if resp.status_code >= 400:
            _json(resp)  # raises the API's error
        path = _artifact_path(dest, name)
        await asyncio.to_thread(path.write_bytes, resp.content)
        return path
