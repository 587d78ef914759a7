"""A corpus of bad (and awkward but good) submissions, made here when a case is sent.

Every case is one `POST /jobs` request and the status (and error code) the README
documents for it.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from tests.conftest import DATA

# -- files ----------------------------------------------------------------------------


def photo(size: tuple[int, int] = (64, 48), seed: int = 0) -> np.ndarray:
    """A small picture with edges (a gradient and a few boxes)."""
    w, h = size
    rng = np.random.default_rng(seed)
    img = np.tile(np.linspace(40, 220, w, dtype=np.uint8), (h, 1))
    for _ in range(4):
        x, y = int(rng.integers(0, w - 8)), int(rng.integers(0, h - 8))
        img[y : y + 8, x : x + 8] = 20
    return np.stack([img, np.roll(img, 5, axis=1), img[:, ::-1]], axis=-1)


def encode(im: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def good_png(seed: int = 0) -> bytes:
    return encode(Image.fromarray(photo(seed=seed)), "PNG")


def cmyk_jpeg() -> bytes:
    return encode(Image.fromarray(photo()).convert("CMYK"), "JPEG", quality=90)


def png_16bit() -> bytes:
    gray = photo()[..., 0].astype(np.uint16) * 257
    im = Image.fromarray(gray)  # uint16 -> mode I;16
    assert im.mode == "I;16", im.mode
    return encode(im, "PNG")


def animated_gif() -> bytes:
    frames = [Image.fromarray(photo(seed=i)).convert("P") for i in range(3)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)


def png_claiming(width: int, height: int) -> bytes:
    """A valid PNG structure whose IHDR claims `width` x `height`, with a few bytes of pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(bytes(1024))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def truncated_jpeg() -> bytes:
    return (DATA / "rocket.jpg").read_bytes()[:2000]


SVG = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
    b'<rect width="10" height="10"/></svg>'
)


def random_bytes(n: int = 4096, seed: int = 7) -> bytes:
    data = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()
    return b"\x00" + data  # no image type starts with a NUL byte


# -- the cases ------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One submission: keyword arguments of httpx's `post("/jobs", ...)`, and its answer."""

    name: str
    request: Callable[[], dict[str, Any]] = field(repr=False)
    status: int
    code: str | None = None  # the error code; None for accepted jobs

    @property
    def accepted(self) -> bool:
        return self.status == 202


def upload(
    name: str, data: Callable[[], bytes], content_type: str = "application/octet-stream"
) -> Callable[[], dict[str, Any]]:
    """The request, made when the case is sent (not at import)."""
    return lambda: {"files": {"image": (name, data(), content_type)}}


CASES = [
    Case("zero_bytes", upload("empty.png", lambda: b"", "image/png"), 400, "empty_upload"),
    Case(
        "text_renamed_png",
        upload("notes.png", lambda: b"these are notes, not pixels\n" * 20, "image/png"),
        415,
        "unsupported_media_type",
    ),
    Case("truncated_jpeg", upload("cut.jpg", truncated_jpeg, "image/jpeg"), 400, "corrupt_image"),
    Case(
        "png_claiming_huge_dimensions",
        upload("bomb.png", lambda: png_claiming(100_000, 100_000), "image/png"),
        413,
        "image_too_large",
    ),
    Case(
        "upload_40mb",
        upload("big.png", lambda: good_png() + bytes(40 * 1024 * 1024), "image/png"),
        413,
        "upload_too_large",
    ),
    Case("svg", upload("drawing.svg", lambda: SVG, "image/svg+xml"), 415, "unsupported_media_type"),
    Case("random_bytes", upload("noise.jpg", random_bytes), 415, "unsupported_media_type"),
    Case(
        "multipart_without_a_file",
        lambda: {"files": {"title": (None, "no file here")}},
        422,
        "missing_input",
    ),
    Case(
        "wrong_field_name",
        lambda: {"files": {"photo": ("p.png", good_png(), "image/png")}},
        422,
        "missing_input",
    ),
    Case("image_field_is_text", lambda: {"data": {"image": "not a file"}}, 422, "missing_input"),
    Case("huge_prompt", lambda: {"json": {"prompt": "a cat " * 20_000}}, 422, "prompt_too_long"),
    Case("prompt_with_nul", lambda: {"json": {"prompt": "a\x00cat"}}, 422, "invalid_prompt"),
    Case(
        "prompt_with_lone_surrogate",
        lambda: {  # valid JSON (an escape), but not text that UTF-8 or a database can hold
            "content": b'{"prompt": "a \\ud800 cat"}',
            "headers": {"content-type": "application/json"},
        },
        422,
        "invalid_prompt",
    ),
    Case(
        "idempotency_key_too_long",
        lambda: {"json": {"prompt": "a cat"}, "headers": {"Idempotency-Key": "k" * 1000}},
        422,
        "invalid_request",
    ),
    Case("json_not_an_object", lambda: {"json": ["prompt"]}, 400, "invalid_json"),
    Case(
        "malformed_json",
        lambda: {"content": b"{not json", "headers": {"content-type": "application/json"}},
        400,
        "invalid_json",
    ),
    Case(
        "plain_text_body",
        lambda: {"content": b"hello", "headers": {"content-type": "text/plain"}},
        415,
        "unsupported_media_type",
    ),
    Case(
        "bad_option",
        lambda: {**upload("p.png", good_png, "image/png")(), "data": {"page_size": "A0"}},
        422,
        "invalid_option",
    ),
    # Awkward but good: these must be accepted and succeed.
    Case(
        "non_ascii_prompt",
        lambda: {"json": {"prompt": "un chat\u00a0qui lit 📚 猫と本 👨\u200d👩\u200d👧"}},
        202,
    ),
    Case("cmyk_jpeg", upload("cmyk.jpg", cmyk_jpeg, "image/jpeg"), 202),
    Case("png_16bit", upload("deep.png", png_16bit, "image/png"), 202),
    Case("animated_gif", upload("anim.gif", animated_gif, "image/gif"), 202),
]
