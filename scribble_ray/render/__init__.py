"""Rendering: pure functions from upload bytes to line art, PNG and PDF (no Ray, no I/O)."""

from scribble_ray.render.images import ImageRejected, decode_image, sniff_image_type
from scribble_ray.render.lineart import encode_png, render_lineart
from scribble_ray.render.pdf import make_pdf
from scribble_ray.render.quality import PageQuality, measure_page

__all__ = [
    "ImageRejected",
    "PageQuality",
    "decode_image",
    "encode_png",
    "make_pdf",
    "measure_page",
    "render_lineart",
    "sniff_image_type",
]
