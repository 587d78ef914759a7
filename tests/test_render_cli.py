"""The local rendering commands: `scribble-ray render` and `scribble-ray contact-sheet`."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pypdf import PdfReader

from scribble_ray.cli import main
from scribble_ray.render.lineart import PAGE_SIDE
from scribble_ray.render.quality import PageQuality
from scribble_ray.render.sheet import CAPTION_HEIGHT, PAD, sheet_size

DATA = Path(__file__).parent / "data"
FIGURE = re.compile(r"^  (\w+) +(\S+)$")


def figures(text: str) -> list[dict[str, float]]:
    """Every block of `  name value` lines the commands print, parsed."""
    blocks: list[dict[str, float]] = []
    for line in text.splitlines():
        match = FIGURE.match(line)
        if not match:
            continue
        if not blocks or match[1] in blocks[-1]:
            blocks.append({})
        blocks[-1][match[1]] = float(match[2])
    return blocks


def test_render_writes_the_page_and_prints_its_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code = main(
        [
            "render",
            str(DATA / "coffee.png"),
            "-o",
            str(out),
            "--detail",
            "low",
            "--line-weight",
            "1.5",
            "--title",
            "Coffee",
        ]
    )
    assert code == 0
    (quality,) = figures(capsys.readouterr().out)
    assert set(quality) == set(PageQuality.__dataclass_fields__)
    assert 0.03 <= quality["ink_coverage"] <= 0.12
    assert quality["colorable_regions"] >= 12
    edge = np.asarray(Image.open(out / "edge.png").convert("L"))
    assert edge.shape == (round(PAGE_SIDE * 400 / 600), PAGE_SIDE)  # coffee.png is 600x400
    # the printed figures are the page's
    assert quality["ink_coverage"] == pytest.approx((edge < 128).mean(), rel=1e-3)
    reader = PdfReader(out / "coloring_page.pdf")
    assert len(reader.pages) == 1 and "Coffee" in reader.pages[0].extract_text()


def test_contact_sheet_puts_each_photo_beside_its_pages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A name with a space and a JPEG, so neither is special-cased by accident.
    photos = [DATA / "horse.png", tmp_path / "the rocket.jpg"]
    shutil.copy(DATA / "rocket.jpg", photos[1])
    sheet_path = tmp_path / "sheets" / "sheet.png"
    code = main(
        [
            "contact-sheet",
            *map(str, photos),
            "--detail",
            "low",
            "high",
            "--cell",
            "200",
            "-o",
            str(sheet_path),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    # one block of figures per photo and detail, in that order
    blocks = figures(out)
    assert len(blocks) == 4
    assert all(set(b) == set(PageQuality.__dataclass_fields__) for b in blocks)
    headings = [line for line in out.splitlines() if "detail=" in line]
    assert headings == [
        "horse.png detail=low line_weight=1",
        "horse.png detail=high line_weight=1",
        "the rocket.jpg detail=low line_weight=1",
        "the rocket.jpg detail=high line_weight=1",
    ]
    # the rocket has more line work at high detail than at low
    assert blocks[3]["ink_coverage"] > blocks[2]["ink_coverage"]

    sheet = np.asarray(Image.open(sheet_path).convert("L"))
    assert (sheet.shape[1], sheet.shape[0]) == sheet_size(2, 2, 200) == (664, 568)
    # Layout: row r, column c holds a picture centered in its 200 px cell. The
    # horse (400x328) is the photo in row 0, column 0; its pages are in columns
    # 1 and 2; the captions sit in the CAPTION_HEIGHT band under each cell.
    for row in (0, 1):
        top = PAD + row * (200 + CAPTION_HEIGHT + PAD)
        for column in (0, 1, 2):
            left = PAD + column * (200 + PAD)
            cell = sheet[top : top + 200, left : left + 200]
            assert (cell < 200).mean() > 0.005, (row, column)  # something drawn
            caption = sheet[top + 200 : top + 200 + CAPTION_HEIGHT, left : left + 200]
            assert (caption < 128).any(), (row, column)  # some text
        gutter = sheet[top : top + 200, PAD + 200 + 2 : PAD + 200 + PAD - 2]
        assert (gutter == 255).all()  # cells do not overlap
    horse_photo = sheet[PAD : PAD + 200, PAD : PAD + 200]
    assert (horse_photo < 60).mean() > 0.2  # a black silhouette, not a page of lines


def test_contact_sheet_rejects_a_non_png_output(tmp_path: Path) -> None:
    code = main(["contact-sheet", str(DATA / "horse.png"), "-o", str(tmp_path / "sheet.jpg")])
    assert code == 2
    assert not (tmp_path / "sheet.jpg").exists()


def test_line_weight_is_bounded_like_the_job_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["render", str(DATA / "horse.png"), "--line-weight", "5"])
    assert "line_weight must be a number from 0.5 to 3.0" in capsys.readouterr().err
