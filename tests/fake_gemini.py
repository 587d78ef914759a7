"""A fake Gemini API on loopback, for the real google-genai SDK to talk to.

It answers `POST /v1beta/models/{model}:generateContent` in the REST shape of the
Generative Language API: an `inlineData` PNG, `usageMetadata`, error JSON for
429 (with Retry-After and RetryInfo) and 5xx, `promptFeedback.blockReason`.
Every call is recorded (arrival, answer, status) and calls in flight are counted.

What a call gets is decided, in this order, by:
  hold_if(call) -> True   the call waits until the test releases it, or until its
                          caller hangs up (a worker killed while its call is
                          provably in flight); it is then recorded as `hung_up`
  throttle(n, after)      the next n calls get 429 RESOURCE_EXHAUSTED
  fail(n, status)         the next n calls get a 5xx error
  markers in the prompt   "[block]" prompt blocked (SAFETY); "[finish-safety]" a
                          candidate stopped by IMAGE_SAFETY; "[no-image]" text only;
                          "[slow]" answers only after `slow_seconds`
  otherwise               after `latency` seconds (the model's work), a PNG page
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image, ImageDraw

PATH = re.compile(r"^/v1beta/models/(?P<model>[^/:]+):generateContent$")
GEMINI_USAGE = {"promptTokenCount": 24, "candidatesTokenCount": 1290, "totalTokenCount": 1314}


@dataclass
class Call:
    """One request as the server saw it."""

    index: int
    model: str
    text: str  # the request's text parts, joined
    image: bytes | None = field(repr=False)  # the first inline image sent, if any
    arrived: float  # time.monotonic() (one clock for every process on this machine)
    finished: float | None = None
    status: int | None = None  # None: never answered (the caller hung up), or in flight
    image_sent: bool = False
    hung_up: bool = False  # the caller went away before its answer
    retry_after: float | None = None  # what a 429 asked for
    _released: threading.Event = field(default_factory=threading.Event, repr=False)


class FakeGemini:
    def __init__(self, api_key: str, *, latency: float = 0.0, slow_seconds: float = 30.0) -> None:
        self.api_key = api_key
        self.latency = latency
        self.slow_seconds = slow_seconds
        self._lock = threading.Condition()
        self._calls: list[Call] = []
        self._in_flight = 0
        self._max_in_flight = 0
        self._throttle: list[float] = []  # Retry-After of each 429 still to send
        self._failures: list[int] = []  # statuses of each 5xx still to send
        self._hold_if: Callable[[Call], bool] | None = None
        self._held: list[Call] = []
        self._closed = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.fake = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # -- lifecycle ---------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FakeGemini:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._closed.set()  # lets held calls go
        self._server.shutdown()
        self._server.server_close()

    # -- scripting ---------------------------------------------------------------
    def reset(self) -> None:
        """Forget what was seen and scripted (between tests sharing one server)."""
        with self._lock:
            self._calls.clear()
            self._max_in_flight = self._in_flight
            self._throttle.clear()
            self._failures.clear()
            self._hold_if = None
            self._held.clear()
        self.latency = 0.0

    def throttle(self, count: int, retry_after: float) -> None:
        with self._lock:
            self._throttle.extend([retry_after] * count)

    def fail(self, count: int, status: int = 500) -> None:
        with self._lock:
            self._failures.extend([status] * count)

    def hold_if(self, predicate: Callable[[Call], bool] | None) -> None:
        with self._lock:
            self._hold_if = predicate

    def wait_held(self, timeout: float = 60.0) -> Call:
        """The next held call (oldest first), waiting for one to arrive."""
        with self._lock:
            if not self._lock.wait_for(lambda: bool(self._held), timeout):
                raise TimeoutError(f"no call was held within {timeout} s")
            return self._held.pop(0)

    def release(self, call: Call) -> None:
        """Let a held call go on to its answer."""
        call._released.set()

    def wait_hung_up(self, call: Call, timeout: float = 60.0) -> None:
        """Until the caller of a held call has gone (its process died)."""
        with self._lock:
            if not self._lock.wait_for(lambda: call.hung_up, timeout):
                raise TimeoutError(f"the caller of call {call.index} is still there")

    # -- what the server saw -----------------------------------------------------
    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    @property
    def max_in_flight(self) -> int:
        with self._lock:
            return self._max_in_flight

    def answered(self) -> list[Call]:
        """Calls that got an image back: the ones a real API would have generated and billed."""
        return [c for c in self.calls if c.image_sent]

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Until no call is in flight (a dropped or timed-out call can outlive its caller)."""
        with self._lock:
            if not self._lock.wait_for(lambda: self._in_flight == 0, timeout):
                raise TimeoutError(f"{self._in_flight} calls still in flight")

    # -- serving -----------------------------------------------------------------
    def _serve(self, handler: _Handler) -> None:
        match = PATH.match(handler.path.split("?", 1)[0])
        if match is None:
            handler.reply(404, _error(404, "NOT_FOUND", f"no route {handler.path}"))
            return
        body = json.loads(handler.rfile.read(int(handler.headers.get("content-length", 0))))
        if handler.headers.get("x-goog-api-key") != self.api_key:
            # What the real API says; the key itself is never echoed or logged.
            handler.reply(400, _error(400, "INVALID_ARGUMENT", "API key not valid."))
            return
        call = self._record(match["model"], body)
        try:
            if self._still_there(handler, call):
                self._answer(handler, call)
        finally:
            with self._lock:
                self._in_flight -= 1
                call.finished = time.monotonic()
                self._lock.notify_all()

    def _record(self, model: str, body: dict[str, Any]) -> Call:
        parts = [p for c in body.get("contents", []) for p in c.get("parts", [])]
        text = " ".join(p["text"] for p in parts if "text" in p)
        images = [_b64(p["inlineData"]["data"]) for p in parts if "inlineData" in p]
        with self._lock:
            call = Call(
                index=len(self._calls),
                model=model,
                text=text,
                image=images[0] if images else None,
                arrived=time.monotonic(),
            )
            self._calls.append(call)
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            if self._hold_if is not None and self._hold_if(call):
                self._held.append(call)
                self._lock.notify_all()
            else:
                call._released.set()
        return call

    def _still_there(self, handler: _Handler, call: Call) -> bool:
        """Wait while the call is held; False (and `hung_up`) if its caller goes away."""
        while not (call._released.wait(0.02) or self._closed.is_set()):
            if _hung_up(handler.connection, 0):
                with self._lock:
                    call.hung_up = True
                    self._lock.notify_all()
                handler.close_connection = True
                return False
        return True

    def _work(self, handler: _Handler, call: Call, seconds: float) -> bool:
        """The model's work: `seconds`, cut short (False) if the caller hangs up."""
        if seconds > 0 and _hung_up(handler.connection, seconds):
            with self._lock:
                call.hung_up = True
                self._lock.notify_all()
            handler.close_connection = True
            return False
        return True

    def _answer(self, handler: _Handler, call: Call) -> None:
        with self._lock:
            retry_after = self._throttle.pop(0) if self._throttle else None
            failure = self._failures.pop(0) if self._failures and retry_after is None else None
        if retry_after is not None:
            call.retry_after = retry_after
            details = [
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": f"{retry_after:g}s",
                }
            ]
            error = _error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted.", details)
            call.status = handler.reply(429, error, {"Retry-After": f"{retry_after:g}"})
        elif failure is not None:
            call.status = handler.reply(failure, _error(failure, "INTERNAL", "Internal error."))
        elif "[block]" in call.text:
            blocked = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": GEMINI_USAGE}
            call.status = handler.reply(200, blocked)
        elif "[finish-safety]" in call.text:
            stopped = {"candidates": [{"finishReason": "IMAGE_SAFETY", "index": 0}]}
            call.status = handler.reply(200, stopped)
        elif "[no-image]" in call.text:
            parts = [{"text": "I can describe a dragon, but not draw one today."}]
            answer = {"candidates": [_candidate(parts)], "usageMetadata": GEMINI_USAGE}
            call.status = handler.reply(200, answer)
        elif self._work(
            handler, call, self.slow_seconds if "[slow]" in call.text else self.latency
        ):
            image = {"inlineData": {"mimeType": "image/png", "data": _page(call.text)}}
            answer = {"candidates": [_candidate([image])], "usageMetadata": GEMINI_USAGE}
            call.status = handler.reply(200, answer)
            call.image_sent = call.status == 200


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeGemini/1"

    def do_POST(self) -> None:
        self.server.fake._serve(self)  # type: ignore[attr-defined]

    def reply(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> int | None:
        """Send a JSON answer; None if the caller hung up first."""
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            return None
        return status

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: a test's output is its assertions


def _b64(data: str) -> bytes:
    """The SDK sends URL-safe base64 without padding; the API takes either alphabet."""
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def _hung_up(conn: socket.socket, timeout: float) -> bool:
    """Whether the client closes its connection within `timeout` seconds. It sends
    nothing while it waits for our answer, so "readable" means it hung up."""
    readable, _, _ = select.select([conn], [], [], timeout)
    if not readable:
        return False
    try:
        return conn.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _error(
    code: int, status: str, message: str, details: list[Any] | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return {"error": error}


def _candidate(parts: list[dict[str, Any]]) -> dict[str, Any]:
    return {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}


def _page(text: str) -> str:
    """A small PNG line drawing with what models add: off-white paper, gray edges, dust."""
    seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
    im = Image.new("RGB", (160, 120), (236, 233, 228))
    draw = ImageDraw.Draw(im)
    draw.rectangle((20, 15, 140, 105), outline=(10, 10, 10), width=3)
    cx, cy = 50 + seed % 60, 45 + (seed >> 8) % 30
    draw.ellipse((cx - 18, cy - 18, cx + 18, cy + 18), outline=(30, 30, 30), width=3)
    draw.line((20, 18, 140, 18), fill=(120, 120, 120), width=1)  # an anti-aliasing fringe
    for x, y in ((5, 5), (150, 8), (8, 110), (152, 112)):
        im.putpixel((x, y), (0, 0, 0))  # specks
    out = io.BytesIO()
    im.save(out, "PNG")
    return base64.b64encode(out.getvalue()).decode()
