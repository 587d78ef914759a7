"""A small Python client for the HTTP API (used by the CLI and the notebooks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

FINAL = {"succeeded", "failed", "cancelled"}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class Client:
    def __init__(self, url: str = "http://127.0.0.1:8000", *, timeout: float = 60.0) -> None:
        self.http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout)

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
        """Long-poll: one request per status change, not one every few seconds."""
        job = self.get(job_id)
        while job["status"] not in FINAL:
            if on_change:
                on_change(job)
            job = self._json(
                self.http.get(
                    f"/jobs/{job_id}",
                    params={"wait": min(30.0, timeout), "seen": job["status"]},
                    timeout=min(30.0, timeout) + 30,
                )
            )
        return job

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._json(self.http.post(f"/jobs/{job_id}/cancel"))

    def attempts(self, job_id: str) -> list[dict[str, Any]]:
        return list(self._json(self.http.get(f"/jobs/{job_id}/attempts"))["attempts"])

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
