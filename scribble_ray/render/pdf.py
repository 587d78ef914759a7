"""A one-page printable PDF around the line-art PNG (reportlab)."""

from __future__ import annotations

import io

from PIL import Image
from reportlab.lib.pagesizes import A4, LETTER, landscape, portrait
from reportlab.lib.units import mm
from reportlab.lib.utils import ImageReader
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen.canvas import Canvas

from scribble_ray.jobs import PageSize

PAGE_SIZES = {PageSize.A4: A4, PageSize.LETTER: LETTER}
MARGIN = 12 * mm  # inside what most home printers can reach
TITLE_FONT = "Helvetica-Bold"
TITLE_SIZE = 20.0  # pt; shrunk down to TITLE_MIN_SIZE to fit the width
TITLE_MIN_SIZE = 10.0
TITLE_GAP = 6 * mm  # between the title and the picture
CREATOR = "scribble-ray"


def make_pdf(png: bytes, *, page_size: PageSize, title: str | None = None) -> bytes:
    """One page: the picture fitted inside the margins, an optional title on top."""
    picture = _load(png)
    heading = " ".join((title or "").split())  # one line, however it was typed
    page_w, page_h = _page(PageSize(page_size), picture.size)
    out = io.BytesIO()
    canvas = Canvas(out, pagesize=(page_w, page_h), pageCompression=1)
    canvas.setTitle(heading or "Coloring page")
    canvas.setCreator(CREATOR)
    canvas.setAuthor(CREATOR)
    canvas.setSubject("Coloring page")
    top = page_h - MARGIN
    if heading:
        top = _draw_title(canvas, heading, page_w, top) - TITLE_GAP
    _draw_picture(canvas, picture, (MARGIN, MARGIN, page_w - MARGIN, top))
    canvas.showPage()
    canvas.save()
    return out.getvalue()


def _load(png: bytes) -> Image.Image:
    """The picture as 8-bit gray or RGB: what a PDF image holds without conversion.

    reportlab would expand a 1-bit image to RGB; gray keeps the page a third
    the size. Both are Flate-compressed, i.e. lossless.
    """
    picture = Image.open(io.BytesIO(png))
    if picture.mode in ("1", "L"):
        return picture.convert("L")
    if "A" in picture.getbands() or "transparency" in picture.info:
        paper = Image.new("RGBA", picture.size, (255, 255, 255, 255))
        return Image.alpha_composite(paper, picture.convert("RGBA")).convert("RGB")
    return picture.convert("RGB")


def _page(page_size: PageSize, picture_size: tuple[int, int]) -> tuple[float, float]:
    """The page in points, turned to landscape for wide pictures."""
    width, height = picture_size
    size = PAGE_SIZES[page_size]
    return landscape(size) if width > height else portrait(size)


def _draw_title(canvas: Canvas, text: str, page_w: float, top: float) -> float:
    """Center the title under the top margin; returns the y of its baseline."""
    room = page_w - 2 * MARGIN
    size = TITLE_SIZE
    while size > TITLE_MIN_SIZE and stringWidth(text, TITLE_FONT, size) > room:
        size -= 1
    if stringWidth(text, TITLE_FONT, size) > room:
        while text and stringWidth(text + "…", TITLE_FONT, size) > room:
            text = text[:-1]
        text = text.rstrip() + "…"
    baseline = top - size
    canvas.setFont(TITLE_FONT, size)
    canvas.drawCentredString(page_w / 2, baseline, text)
    return baseline


def _draw_picture(
    canvas: Canvas, picture: Image.Image, box: tuple[float, float, float, float]
) -> None:
    """Fit the picture in the box (left, bottom, right, top), centered, aspect kept."""
    left, bottom, right, top = box
    scale = min((right - left) / picture.width, (top - bottom) / picture.height)
    width, height = picture.width * scale, picture.height * scale
    x = left + (right - left - width) / 2
    y = bottom + (top - bottom - height) / 2
    canvas.drawImage(ImageReader(picture), x, y, width, height)
