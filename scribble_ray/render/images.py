"""Safe decoding of uploaded photos into RGB arrays.

Uploads are untrusted: the type is sniffed from magic bytes (never the file
name), Pillow is only allowed the sniffed format, the pixel count is checked
from the header before any pixel is decoded, and every failure becomes an
`ImageRejected` with a stable code the HTTP layer can map to a status.
"""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
from PIL import Image, ImageOps

from scribble_ray.jobs import PermanentJobError

HTTP_STATUS = {
    "unsupported_media_type": 415,
    "image_too_large": 413,
    "corrupt_image": 400,
    "empty_upload": 400,
}

# Sniffed type -> the one Pillow plugin allowed to parse it.
PILLOW_FORMATS = {
    "png": "PNG",
    "jpeg": "JPEG",
    "gif": "GIF",
    "webp": "WEBP",
    "bmp": "BMP",
    "tiff": "TIFF",
}

# Sizes of the BMP info headers Pillow understands; checking one makes "BM" text
# files fail the sniff instead of looking like corrupt bitmaps.
_BMP_HEADER_SIZES = {12, 40, 52, 56, 64, 108, 124}

# What Pillow raises on bad data: truncation, bad chunks and unidentifiable
# files are OSError, some plugins raise the others.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError)


class ImageRejected(PermanentJobError):
    """An upload we will never be able to render; retrying cannot help."""

    def __init__(self, message: str, code: str) -> None:
        if code not in HTTP_STATUS:
            raise ValueError(f"unknown image rejection code {code!r}")
        super().__init__(message, code=code)
        self.http_status = HTTP_STATUS[code]

    def __reduce__(self) -> tuple[type[ImageRejected], tuple[str, str]]:
        # Keep the code across pickling (Ray ships errors between processes).
        return type(self), (str(self), self.code)


def sniff_image_type(data: bytes) -> str | None:
    """The image type from its magic bytes, or None if it is not one we accept."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "webp"
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    if (
        data.startswith(b"BM")
        and len(data) >= 18
        and int.from_bytes(data[14:18], "little") in _BMP_HEADER_SIZES
    ):
        return "bmp"
    return None


def decode_image(
    data: bytes,
    *,
    max_pixels: int = 80_000_000,
    max_side: int = 4096,
    draft_side: int | None = None,
) -> np.ndarray:
    """Decode an upload to an RGB uint8 array (H, W, 3), upright, alpha on white.

    The longest side is reduced to at most `max_side` as early as the format
    allows (JPEG decodes at 1/2, 1/4 or 1/8 scale directly). A caller that
    needs no more than `draft_side` px lets a JPEG decode at the smallest such
    scale still covering it (4x faster at 1/2), with no further resampling.
    """
    if not data:
        raise ImageRejected("The upload is empty.", code="empty_upload")
    kind = sniff_image_type(data)
    if kind is None:
        raise ImageRejected(
            "Unsupported file type: upload a PNG, JPEG, GIF, WebP, BMP or TIFF image.",
            code="unsupported_media_type",
        )
    try:
        # Pillow warns about (and past 2x its limit refuses) huge images while
        # reading the header; turn its warning into the same rejection. (The
        # filter is process-wide, so it is held only while the header is read.)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=[PILLOW_FORMATS[kind]])
        _check_pixels(im.size, max_pixels)
        _draft(im, min(max_side, draft_side or max_side))
        im.load()
        return _to_rgb_array(im, max_side)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_large() from exc
    except _DECODE_ERRORS as exc:
        raise ImageRejected(
            f"The {kind.upper()} image is damaged or incomplete and cannot be read ({exc}).",
            code="corrupt_image",
        ) from exc


def _too_large(size: tuple[int, int] | None = None) -> ImageRejected:
    dims = f" ({size[0]}x{size[1]})" if size else ""
    return ImageRejected(f"The image is too large{dims}.", code="image_too_large")


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageRejected("The image has no pixels.", code="corrupt_image")
    if width * height > max_pixels:
        raise _too_large(size)


def _draft(im: Image.Image, max_side: int) -> None:
    """Let JPEG decode at a reduced scale that still covers `max_side` (other formats ignore it)."""
    width, height = im.size
    scale = max_side / max(width, height)
    if scale < 1:
        im.draft(im.mode, (max(1, int(width * scale)), max(1, int(height * scale))))


def _to_rgb_array(im: Image.Image, max_side: int) -> np.ndarray:
    _apply_orientation(im)
    im = _normalize_mode(im)
    if max(im.size) > max_side:
        # reducing_gap makes thumbnail box-reduce by an integer factor first (fast),
        # then resample with Lanczos for the last step (sharp).
        im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS, reducing_gap=2.0)
    if im.mode == "RGBA":
        im = _flatten(im)
    return np.asarray(im, dtype=np.uint8)


def _apply_orientation(im: Image.Image) -> None:
    """Rotate as the camera recorded; a malformed EXIF block only loses the rotation."""
    with contextlib.suppress(*_DECODE_ERRORS):
        ImageOps.exif_transpose(im, in_place=True)


def _normalize_mode(im: Image.Image) -> Image.Image:
    """Reduce any Pillow mode to RGB, or RGBA when there is transparency."""
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return Image.fromarray(_deep_to_8bit(np.asarray(im))).convert("RGB")
    has_alpha = "A" in im.getbands() or (im.mode in ("P", "L", "RGB") and "transparency" in im.info)
    return im.convert("RGBA" if has_alpha else "RGB")


def _deep_to_8bit(pixels: np.ndarray) -> np.ndarray:
    """Scale 16-bit / 32-bit / float grayscale to 8 bits (Pillow would clip instead)."""
    values = pixels.astype(np.float32)
    peak = float(values.max(initial=0.0))
    if pixels.dtype.kind == "f" and peak <= 1.0:
        values = values * 255.0
    elif (pixels.dtype.kind == "u" and pixels.dtype.itemsize == 2) or 255 < peak <= 65535:
        values = values / 257.0
    elif peak > 65535:
        values = values * (255.0 / peak)
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _flatten(im: Image.Image) -> Image.Image:
    """Composite onto white paper: transparent areas must not print black."""
    paper = Image.new("RGBA", im.size, (255, 255, 255, 255))
    return Image.alpha_composite(paper, im).convert("RGB")
