"""A contact sheet: photos beside their coloring pages, captioned with the quality figures.

For people, not machines: it is how a page's quality is judged by eye (noise,
broken outlines, blobs) next to the numbers that are meant to track it. One row
per photo: the photo, then one page per rendering (e.g. per detail level).
Every cell has the same size, so the layout is predictable: `sheet_size`.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from scribble_ray.render.quality import PageQuality, target_misses

PAD = 16  # px between cells and around the sheet
FONT_SIZE = 14
LINE_HEIGHT = 18
CAPTION_LINES = 3
CAPTION_HEIGHT = CAPTION_LINES * LINE_HEIGHT + 6
BORDER = (170, 170, 170)  # the paper's edge, so a page is visible on the white sheet
TEXT = (20, 20, 20)
MISS = (200, 0, 0)  # a caption line with a figure outside the targets


@dataclass(frozen=True)
class Page:
    """One rendering of a photo: the line art, its figures and what it was rendered with."""

    label: str  # e.g. "medium, weight 1.0"
    lineart: np.ndarray  # uint8 (H, W), 0 = ink
    quality: PageQuality


@dataclass(frozen=True)
class Row:
    name: str  # the photo's file name
    photo: np.ndarray  # RGB uint8 (H, W, 3)
    pages: list[Page]


def sheet_size(rows: int, pages_per_row: int, cell: int) -> tuple[int, int]:
    """(width, height) of a sheet: one photo cell plus `pages_per_row` page cells per row."""
    width = PAD + (1 + pages_per_row) * (cell + PAD)
    height = PAD + rows * (cell + CAPTION_HEIGHT + PAD)
    return width, height


Caption = list[list[tuple[str, bool]]]  # lines of (text, within targets) pieces


def caption(page: Page) -> Caption:
    """A page cell's caption: its label, then its figures, each marked in or out of target."""
    q = page.quality
    misses = set(target_misses(q))
    return [
        [(page.label, True)],
        [
            (f"ink {100 * q.ink_coverage:.1f}%", "ink_coverage" not in misses),
            (f"regions {q.colorable_regions}", "colorable_regions" not in misses),
        ],
        [
            (f"specks {100 * q.speck_ink_share:.2f}%", "speck_ink_share" not in misses),
            (f"blob {100 * q.largest_blob_share:.2f}%", "largest_blob_share" not in misses),
            (f"stroke {q.stroke_width_median:.1f}px", True),
        ],
    ]


def contact_sheet(rows: list[Row], *, cell: int = 400) -> Image.Image:
    """The sheet as an RGB image of `sheet_size(len(rows), pages per row, cell)`."""
    if not rows:
        raise ValueError("a contact sheet needs at least one photo")
    columns = max(len(row.pages) for row in rows)
    sheet = Image.new("RGB", sheet_size(len(rows), columns, cell), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=FONT_SIZE)
    for r, row in enumerate(rows):
        top = PAD + r * (cell + CAPTION_HEIGHT + PAD)
        height, width = row.photo.shape[:2]
        _paste(sheet, draw, row.photo, (PAD, top), cell, border=False)
        _caption(draw, font, (PAD, top + cell), [[(row.name, True)], [(f"{width}x{height}", True)]])
        for c, page in enumerate(row.pages):
            left = PAD + (c + 1) * (cell + PAD)
            _paste(sheet, draw, page.lineart, (left, top), cell, border=True)
            _caption(draw, font, (left, top + cell), caption(page))
    return sheet


def _paste(
    sheet: Image.Image,
    draw: ImageDraw.ImageDraw,
    pixels: np.ndarray,
    corner: tuple[int, int],
    cell: int,
    *,
    border: bool,
) -> None:
    """Fit `pixels` in the cell at `corner`, centered, aspect kept."""
    height, width = pixels.shape[:2]
    scale = cell / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # INTER_AREA averages: thin strokes shrink to gray instead of vanishing.
    fitted = cv2.resize(
        pixels, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    )
    x = corner[0] + (cell - size[0]) // 2
    y = corner[1] + (cell - size[1]) // 2
    sheet.paste(Image.fromarray(fitted).convert("RGB"), (x, y))
    if border:
        draw.rectangle((x - 1, y - 1, x + size[0], y + size[1]), outline=BORDER)


def _caption(
    draw: ImageDraw.ImageDraw,
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
    corner: tuple[int, int],
    lines: Caption,
) -> None:
    """Draw the caption under a cell; a figure outside its target is red."""
    for i, pieces in enumerate(lines[:CAPTION_LINES]):
        x, y = corner[0], corner[1] + 4 + i * LINE_HEIGHT
        for text, ok in pieces:
            draw.text((x, y), text, fill=TEXT if ok else MISS, font=font)
            x += round(draw.textlength(text + "  ", font=font))
