"""The pure rendering package: safe decode, line art, PNG, PDF and page quality."""

from __future__ import annotations

import io
import pickle
import struct
import zlib
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pypdf import PdfReader

from scribble_ray.jobs import (
    Detail,
    Job,
    JobOptions,
    Kind,
    Lane,
    PageSize,
    PermanentJobError,
    Status,
)
from scribble_ray.render import (
    ImageRejected,
    PageQuality,
    decode_image,
    encode_png,
    make_pdf,
    measure_page,
    render_lineart,
    sniff_image_type,
)
from scribble_ray.render.lineart import PAGE_SIDE
from scribble_ray.renderers import LocalRenderer
from scribble_ray.settings import Settings

DATA = Path(__file__).parent / "data"
SAMPLES = ["astronaut.png", "camera.png", "chelsea.png", "coffee.png", "horse.png", "rocket.jpg"]
# A pure silhouette is one outline with nothing inside it: inside and outside are
# its only regions, and its ink is that outline's length times the pen.
SILHOUETTES = {"horse.png"}
SUBJECTS = [name for name in SAMPLES if name not in SILHOUETTES]
LINE_WEIGHTS = [0.75, 1.0, 2.0]


def encoded(im: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    im.save(out, format=fmt, **params)
    return out.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares a size; no pixel data worth the name follows."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


@cache
def sample_rgb(name: str) -> np.ndarray:
    return decode_image((DATA / name).read_bytes())


@cache
def sample_lineart(name: str, detail: Detail = Detail.MEDIUM, weight: float = 1.0) -> np.ndarray:
    return render_lineart(sample_rgb(name), detail, line_weight=weight)


@cache
def sample_quality(name: str, detail: Detail = Detail.MEDIUM, weight: float = 1.0) -> PageQuality:
    return measure_page(sample_lineart(name, detail, weight))


def min_regions(name: str, detail: Detail, weight: float) -> int:
    """The colorable-region floor for a sample page: 20, but for two known exceptions."""
    if name in SILHOUETTES:
        return 2
    if name == "coffee.png" and (detail is Detail.LOW or weight >= 2):
        # A cup on a saucer has 14-19 regions at low detail or with the heavy pen
        # (ink capped at ~11%); more would come only from the wood grain around it.
        return 12
    return 20


def rejection(data: bytes, **limits: int) -> ImageRejected:
    with pytest.raises(ImageRejected) as caught:
        decode_image(data, **limits)
    return caught.value


# --- sniffing and rejections ---------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "kind"),
    [
        ("PNG", "png"),
        ("JPEG", "jpeg"),
        ("GIF", "gif"),
        ("WEBP", "webp"),
        ("BMP", "bmp"),
        ("TIFF", "tiff"),
    ],
)
def test_sniff_recognizes_each_accepted_format(fmt: str, kind: str) -> None:
    data = encoded(Image.new("RGB", (8, 8), "red"), fmt)
    assert sniff_image_type(data) == kind
    assert decode_image(data).shape == (8, 8, 3)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello, this is a text file named photo.png",
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
        b"BM but really just text",
        bytes(range(256)),
    ],
)
def test_sniff_rejects_everything_else(data: bytes) -> None:
    assert sniff_image_type(data) is None


def test_empty_upload() -> None:
    err = rejection(b"")
    assert (err.code, err.http_status) == ("empty_upload", 400)


@pytest.mark.parametrize(
    "data",
    [
        b"just some text that someone renamed to cat.jpg\n",
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><rect/></svg>',
    ],
)
def test_text_and_svg_are_unsupported(data: bytes) -> None:
    err = rejection(data)
    assert (err.code, err.http_status) == ("unsupported_media_type", 415)


@pytest.mark.parametrize(
    ("data", "limits"),
    [
        (png_header_only(100_000, 100_000), {}),  # Pillow's own bomb error
        (png_header_only(10_000, 9_000), {}),  # Pillow's bomb warning, our 80 MP limit
        (png_header_only(5_000, 5_000), {"max_pixels": 1_000_000}),  # our limit only
    ],
)
def test_huge_declared_size_is_rejected_before_decoding(data: bytes, limits: dict) -> None:
    err = rejection(data, **limits)
    assert (err.code, err.http_status) == ("image_too_large", 413)


def test_truncated_jpeg_is_corrupt() -> None:
    noise = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    data = encoded(Image.fromarray(noise), "JPEG", quality=90)
    err = rejection(data[: len(data) // 2])
    assert (err.code, err.http_status) == ("corrupt_image", 400)
    assert "damaged or incomplete" in str(err)


def test_rejection_is_permanent_and_survives_pickling() -> None:
    err = rejection(b"")
    assert isinstance(err, PermanentJobError)
    assert err.permanent
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.code, copy.http_status, str(copy)) == (err.code, err.http_status, str(err))


# --- decoding ------------------------------------------------------------------------


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated 90 degrees clockwise
    data = encoded(Image.new("RGB", (120, 80), "white"), "JPEG", exif=exif.tobytes())
    assert decode_image(data).shape == (120, 80, 3)


def test_cmyk_jpeg_becomes_rgb() -> None:
    data = encoded(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95)
    r, g, b = decode_image(data)[8, 8].astype(int)
    assert r > 200 and g < 60 and b < 60  # red


def test_16_bit_png_is_scaled_not_clipped() -> None:
    levels = np.array([[0, 32896, 65535]], dtype=np.uint16)
    rgb = decode_image(encoded(Image.fromarray(levels), "PNG"))
    assert rgb.dtype == np.uint8
    assert rgb[0, :, 0].tolist() == [0, 128, 255]
    assert (rgb[..., 0] == rgb[..., 2]).all()


def test_palette_png_transparency_becomes_white() -> None:
    im = Image.new("P", (2, 1))
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    im.putpixel((0, 0), 0)  # transparent black
    im.putpixel((1, 0), 1)  # opaque red
    rgb = decode_image(encoded(im, "PNG", transparency=0))
    assert rgb[0].tolist() == [[255, 255, 255], [255, 0, 0]]


def test_la_png_flattens_onto_white() -> None:
    im = Image.new("LA", (2, 1))
    im.putpixel((0, 0), (0, 0))  # transparent black
    im.putpixel((1, 0), (40, 255))  # opaque dark gray
    rgb = decode_image(encoded(im, "PNG"))
    assert rgb[0].tolist() == [[255, 255, 255], [40, 40, 40]]


def test_rgba_flattens_onto_white() -> None:
    im = Image.new("RGBA", (3, 1))
    im.putpixel((0, 0), (0, 0, 0, 0))
    im.putpixel((1, 0), (0, 0, 0, 128))
    im.putpixel((2, 0), (0, 0, 255, 255))
    rgb = decode_image(encoded(im, "PNG")).astype(int)
    assert rgb[0, 0].tolist() == [255, 255, 255]
    assert all(abs(v - 127) <= 2 for v in rgb[0, 1])
    assert rgb[0, 2].tolist() == [0, 0, 255]


@pytest.mark.parametrize("mode", ["1", "L", "I", "F"])
def test_gray_and_deep_modes_become_rgb(mode: str) -> None:
    im = Image.new("L", (4, 4), 255).convert(mode)
    fmt = "TIFF" if mode in ("I", "F") else "PNG"
    rgb = decode_image(encoded(im, fmt))
    assert rgb.shape == (4, 4, 3)
    assert (rgb == 255).all()


def test_animated_gif_uses_first_frame() -> None:
    frames = [Image.new("RGB", (10, 10), color) for color in ("red", "blue", "green")]
    data = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    r, g, b = decode_image(data)[5, 5].astype(int)
    assert r > 200 and g < 50 and b < 50


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_large_images_are_downscaled_to_max_side(fmt: str) -> None:
    data = encoded(Image.new("RGB", (3000, 1200), "gray"), fmt)
    assert decode_image(data, max_side=1000).shape == (400, 1000, 3)


def test_jpeg_draft_decodes_no_smaller_than_asked_and_other_formats_ignore_it() -> None:
    photo = Image.new("RGB", (4000, 3000), "gray")
    jpeg = decode_image(encoded(photo, "JPEG"), draft_side=1600)
    assert jpeg.shape == (1500, 2000, 3)  # the 1/2 DCT scale: the smallest covering 1600
    assert decode_image(encoded(photo, "PNG"), draft_side=1600).shape == (3000, 4000, 3)


def test_sample_photos_decode_to_rgb() -> None:
    for name in SAMPLES:
        rgb = sample_rgb(name)
        width, height = Image.open(DATA / name).size
        assert rgb.shape == (height, width, 3) and rgb.dtype == np.uint8, name


# --- line art ------------------------------------------------------------------------


@pytest.mark.parametrize("name", SAMPLES)
def test_lineart_is_a_print_sized_page_with_the_photo_aspect(name: str) -> None:
    art = sample_lineart(name)
    height, width = sample_rgb(name).shape[:2]
    assert art.dtype == np.uint8
    assert max(art.shape) == PAGE_SIDE
    # the aspect ratio is kept to the pixel
    assert abs(art.shape[0] * width - art.shape[1] * height) <= max(width, height)
    assert set(np.unique(art).tolist()) <= {0, 255}


@pytest.mark.parametrize("weight", LINE_WEIGHTS)
@pytest.mark.parametrize("detail", list(Detail))
@pytest.mark.parametrize("name", SAMPLES)
def test_lineart_meets_coloring_page_targets(name: str, detail: Detail, weight: float) -> None:
    quality = sample_quality(name, detail, weight)
    low_ink = 0.01 if name in SILHOUETTES else 0.03
    assert low_ink <= quality.ink_coverage <= 0.12, quality
    assert quality.speck_ink_share < 0.01, quality
    assert quality.largest_blob_share < 0.005, quality
    assert quality.colorable_regions >= min_regions(name, detail, weight), quality


@pytest.mark.parametrize("color", [(255, 255, 255), (0, 0, 0), (200, 120, 40)])
def test_flat_image_gives_a_blank_page(color: tuple[int, int, int]) -> None:
    flat = np.full((600, 800, 3), color, np.uint8)
    assert measure_page(render_lineart(flat)).ink_coverage < 0.001


def test_outline_not_filled_shape() -> None:
    """A big black disc on white becomes a circle to color in, not a black blob."""
    yy, xx = np.mgrid[:600, :800]
    disc = ((yy - 300) ** 2 + (xx - 400) ** 2 < 200**2)[..., None]
    rgb = np.where(disc, 0, 255).astype(np.uint8).repeat(3, axis=2)
    quality = measure_page(render_lineart(rgb))
    assert quality.largest_blob_share < 0.001
    assert quality.colorable_regions == 2
    assert quality.ink_coverage < 0.03


@pytest.mark.parametrize("name", SUBJECTS)
def test_detail_changes_the_amount_of_line_work(name: str) -> None:
    ink = [sample_quality(name, d).ink_coverage for d in Detail]
    assert [d.value for d in Detail] == ["low", "medium", "high"]
    assert ink[0] < ink[1] < ink[2]
    assert ink[2] > 1.3 * ink[0]


@pytest.mark.parametrize("name", SAMPLES)
def test_line_weight_changes_the_stroke_width(name: str) -> None:
    strokes = [sample_quality(name, Detail.MEDIUM, w).stroke_width_median for w in LINE_WEIGHTS]
    assert strokes[0] < strokes[1] < strokes[2]
    assert strokes[2] >= 1.6 * strokes[1]  # twice the weight: a visibly heavier line


def test_local_renderer_passes_detail_and_line_weight() -> None:
    """The job options reach the renderer: same page as a direct call with those options."""
    job = Job(
        id="j",
        kind=Kind.IMAGE,
        status=Status.RUNNING,
        attempt=1,
        max_attempts=3,
        options=JobOptions(detail=Detail.HIGH, line_weight=2.0),
        owner="local",
        lane=Lane.INTERACTIVE,
        created_at=datetime.now(UTC),
    )
    page = LocalRenderer(Settings()).render(job, (DATA / "coffee.png").read_bytes())
    assert (page == sample_lineart("coffee.png", Detail.HIGH, 2.0)).all()


def test_odd_sizes_and_tiny_images() -> None:
    for shape, page in [
        ((1, 1, 3), (PAGE_SIDE, PAGE_SIDE)),
        ((7, 300, 3), (round(7 * PAGE_SIDE / 300), PAGE_SIDE)),
        ((300, 7, 3), (PAGE_SIDE, round(7 * PAGE_SIDE / 300))),
        ((33, 47, 3), (round(33 * PAGE_SIDE / 47), PAGE_SIDE)),
    ]:
        rgb = np.random.default_rng(1).integers(0, 255, shape, dtype=np.uint8)
        assert render_lineart(rgb).shape == page


@pytest.mark.parametrize("bad", [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float32)])
def test_lineart_rejects_non_rgb_arrays(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        render_lineart(bad)


def test_png_is_lossless_and_one_bit() -> None:
    art = sample_lineart("coffee.png")
    png = encode_png(art)
    im = Image.open(io.BytesIO(png))
    assert im.format == "PNG" and im.mode == "1"
    assert (np.asarray(im.convert("L")) == art).all()
    assert len(png) < art.size / 8  # smaller than the raw bits


# --- quality measures ----------------------------------------------------------------


def test_quality_measures_on_a_drawn_page() -> None:
    page = np.full((400, 400), 255, np.uint8)
    page[100:103, 50:350] = 0  # a 3 px line ...
    page[50:350, 200:203] = 0  # ... crossing another: no enclosed region
    page[10:70, 10:70] = 0  # a solid square
    page[380, 380] = 0  # a speck
    quality = measure_page(page)
    assert quality.stroke_width_median == 3.0
    # the opening rounds the square's corners off
    assert quality.largest_blob_share == pytest.approx(60 * 60 / page.size, rel=0.02)
    assert quality.speck_ink_share == pytest.approx(1 / (page < 128).sum())
    assert quality.colorable_regions == 1
    assert quality.ink_coverage == pytest.approx((page < 128).mean())


# --- PDF -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("page_size", "portrait"), [(PageSize.A4, (595, 842)), (PageSize.LETTER, (612, 792))]
)
@pytest.mark.parametrize("name", ["camera.png", "coffee.png"])  # square, landscape
def test_pdf_page(page_size: PageSize, portrait: tuple[int, int], name: str) -> None:
    art = sample_lineart(name)
    pdf = make_pdf(encode_png(art), page_size=page_size, title="My Coffee")
    reader = PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) == 1
    box = reader.pages[0].mediabox
    size = (round(float(box.width)), round(float(box.height)))
    landscape = art.shape[1] > art.shape[0]
    assert size == (portrait[::-1] if landscape else portrait)
    assert reader.metadata.title == "My Coffee"
    assert reader.metadata.creator == "scribble-ray"
    assert "My Coffee" in reader.pages[0].extract_text()
    assert b"DCTDecode" not in pdf
    assert len(pdf) < 1_000_000


def test_pdf_embeds_the_picture_losslessly_inside_the_margins() -> None:
    art = sample_lineart("rocket.jpg")
    reader = PdfReader(io.BytesIO(make_pdf(encode_png(art), page_size=PageSize.A4)))
    page = reader.pages[0]
    (image,) = page.images
    assert (np.asarray(image.image.convert("L")) == art).all()
    assert reader.metadata.title == "Coloring page"
    assert page.extract_text().strip() == ""


def test_pdf_flattens_a_transparent_png_onto_white() -> None:
    im = Image.new("RGBA", (40, 20), (0, 0, 0, 0))
    im.paste((255, 0, 0, 255), (0, 0, 20, 20))
    reader = PdfReader(io.BytesIO(make_pdf(encoded(im, "PNG"), page_size=PageSize.A4)))
    (image,) = reader.pages[0].images
    pixels = np.asarray(image.image.convert("RGB"))
    assert pixels[10, 10].tolist() == [255, 0, 0]
    assert pixels[10, 30].tolist() == [255, 255, 255]


def test_pdf_title_that_is_too_long_is_shortened() -> None:
    png = encode_png(np.full((100, 100), 255, np.uint8))
    title = "A very long title " * 20
    reader = PdfReader(io.BytesIO(make_pdf(png, page_size=PageSize.LETTER, title=title)))
    text = reader.pages[0].extract_text().strip()
    assert text.endswith("…") and len(text) < len(title)
    assert reader.metadata.title == title.strip()


def test_pdf_blank_title_is_no_title() -> None:
    png = encode_png(np.full((100, 100), 255, np.uint8))
    reader = PdfReader(io.BytesIO(make_pdf(png, page_size=PageSize.A4, title="  \n ")))
    assert reader.metadata.title == "Coloring page"
    assert reader.pages[0].extract_text().strip() == ""
