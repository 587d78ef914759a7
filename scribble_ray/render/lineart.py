"""Photo -> coloring-page line art with OpenCV. Pure: arrays in, arrays out.

The renderer is XDoG taken to its edge-only limit: with a very strong
sharpening term, XDoG inks exactly the dark side of the difference-of-Gaussians
zero crossings, so lines sit on object outlines instead of filling dark areas.
Around that core:

1. edges are found on a small analysis image (bounded cost, and a fixed notion
   of "detail" whatever the photo size), after an edge-preserving guided filter
   has flattened texture and noise;
2. the DoG and gradient fields are upsampled to the page, a fixed print
   resolution, where zero crossings give smooth one-pixel contours;
3. contours are kept by hysteresis on gradient strength (luminance and color),
   short ones are dropped as specks, ones crowding a stronger line are dropped,
   and an ink budget (measured, then corrected once) keeps busy photos from
   turning gray: the strongest contours win;
4. loose contour ends are linked to the nearest line (or page edge) ahead of
   them, so the page has closed regions to color;
5. contours are drawn at one stroke width, and areas thicker than two strokes
   are hollowed to outlines.

The page does not follow the photo's pixel count: a 450-px photo printed on A4
would be ~40 dpi with visible stair steps, and a 12-MP one would spend most of
a second on PNG and PDF work for detail the analysis never saw. Its aspect
ratio does.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from scribble_ray.jobs import Detail

PAGE_SIDE = 2000  # long side (px) of the page: 185-270 dpi on A4, as the photo is fitted
ANALYSIS_SIDE = 800  # long side (px) where edges are detected
# A photo bigger than this gains nothing (edges are found at ANALYSIS_SIDE): a JPEG
# may decode at a reduced scale down to it. Twice the analysis size keeps the
# area-average downscale to the analysis image sharp.
SOURCE_SIDE = 2 * ANALYSIS_SIDE
STROKE = 0.003 * PAGE_SIDE  # page px at line weight 1: 0.55-0.8 mm on a printed A4 page
GUIDED_RADIUS = 5  # guided filter window radius, analysis px
GUIDED_EPS = 0.02  # guided filter: contrast (L/100, squared) treated as texture
DOG_RATIO = 1.6  # outer / inner Gaussian of the DoG (the classic Marr-Hildreth ratio)
CHROMA_WEIGHT = 0.5  # color edges count, but less than luminance edges
MAX_INK = 0.11  # ink budget ceiling, whatever the detail and weight (the target is 12%)
INK_TOLERANCE = 0.08  # relative: this far under its ink budget, a page is not redone
# Crowding: a contour with over MAX_NEAR of its length within SPACING strokes of
# stronger ones is dropped. Checked in tiers (shares of the length budget), one
# distance transform per tier.
SPACING = 2.0
MAX_NEAR = 0.5
TIERS = (0.5, 0.2)
# Linking loose ends: how far straight ahead (share of the page's long side) an
# end looks for a line to join, and how far off its own direction (degrees).
LINK_REACH = 0.1
LINK_ANGLE = 80.0
TANGENT_LENGTH = round(0.006 * PAGE_SIDE)  # px of contour behind an end: its direction


@dataclass(frozen=True)
class _Style:
    sigma: float  # DoG inner scale, analysis px: larger = coarser features only
    low: float  # hysteresis: weakest gradient (L/100 per px) a contour continues through
    high: float  # hysteresis: gradient a contour must reach somewhere to be drawn
    budget: float  # share of the page the strokes may ink at line weight 1
    min_length: float  # shortest contour kept, as a share of the page's long side


STYLES = {
    Detail.LOW: _Style(sigma=3.0, low=0.003, high=0.015, budget=0.065, min_length=0.03),
    Detail.MEDIUM: _Style(sigma=2.5, low=0.003, high=0.015, budget=0.08, min_length=0.03),
    Detail.HIGH: _Style(sigma=1.8, low=0.002, high=0.012, budget=0.105, min_length=0.02),
}


def render_lineart(
    rgb: np.ndarray, detail: Detail = Detail.MEDIUM, *, line_weight: float = 1.0
) -> np.ndarray:
    """Line art for an RGB uint8 photo: uint8 page, 0 = ink, 255 = paper.

    The page has the photo's aspect ratio and a long side of PAGE_SIDE px.
    `line_weight` scales the stroke width: the same drawing with a thinner or
    thicker pen, until the ink would pass MAX_INK; then the weakest contours
    give way, so a heavy pen still leaves room for color.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 array (H, W, 3), got {rgb.dtype} {rgb.shape}")
    if not line_weight > 0:
        raise ValueError("line_weight must be positive")
    style = STYLES[Detail(detail)]
    page = _fit((rgb.shape[1], rgb.shape[0]), PAGE_SIDE)
    dog, strength = _edge_fields(rgb, style)
    dog = cv2.resize(dog, page, interpolation=cv2.INTER_CUBIC)
    strength = cv2.resize(strength, page, interpolation=cv2.INTER_LINEAR)
    stroke = STROKE * line_weight
    target = min(style.budget * line_weight, MAX_INK)
    length = target * dog.size / stroke  # first guess: contour px x pen width = ink
    found = _find_contours(_zero_crossings(dog), strength, style)
    for attempt in range(2):
        picked, exhausted = _select_contours(found, length_budget=length, spacing=SPACING * stroke)
        # Measured, not estimated: thin loops ink both their sides as one stroke
        # and pen ends add ink, so the first guess is off by up to 20%. (The
        # half-size measure reads ~5% high, about what the links drawn next add.)
        share = _ink_share(picked, stroke)
        if (
            attempt
            or target * (1 - INK_TOLERANCE) <= share <= target
            or (share < target and exhausted)
        ):
            break
        # Ink is close to proportional to length: aim a little low, as there is
        # no third try.
        length *= (1 - INK_TOLERANCE / 2) * target / max(share, 1e-6)
    return _smooth(_draw(_distance_to(_link_ends(picked)), stroke))


def encode_png(lineart: np.ndarray) -> bytes:
    """Lossless 1-bit PNG: line art has two tones, so one bit per pixel suffices."""
    bits = Image.fromarray(lineart).convert("1", dither=Image.Dither.NONE)
    out = io.BytesIO()
    bits.save(out, format="PNG", compress_level=6)  # 9 is ~6x slower for ~10% smaller
    return out.getvalue()


def _fit(size: tuple[int, int], long_side: int) -> tuple[int, int]:
    """(width, height) scaled so the long side is `long_side`, keeping the aspect."""
    scale = long_side / max(size)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _edge_fields(rgb: np.ndarray, style: _Style) -> tuple[np.ndarray, np.ndarray]:
    """DoG of the smoothed lightness, and edge strength, on the analysis image."""
    size = _fit((rgb.shape[1], rgb.shape[0]), ANALYSIS_SIDE)
    shrink = size[0] < rgb.shape[1]
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    # CIELAB lightness is perceptual: an edge in the shadows counts as much as one
    # in the highlights.
    lab = cv2.cvtColor(small.astype(np.float32) * (1 / 255), cv2.COLOR_RGB2Lab) * (1 / 100)
    lightness = _guided_filter(np.ascontiguousarray(lab[..., 0]), GUIDED_RADIUS, GUIDED_EPS)
    inner = cv2.GaussianBlur(lightness, (0, 0), style.sigma)
    dog = inner - cv2.GaussianBlur(lightness, (0, 0), style.sigma * DOG_RATIO)
    strength_sq = _gradient(inner) ** 2
    for channel in (1, 2):
        chroma = cv2.GaussianBlur(lab[..., channel], (0, 0), style.sigma * DOG_RATIO)
        strength_sq += CHROMA_WEIGHT * _gradient(chroma) ** 2
    return dog, np.sqrt(strength_sq)


def _guided_filter(image: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Self-guided filter (He et al.): smooths texture, keeps strong edges, O(1) per px."""
    box = (2 * radius + 1, 2 * radius + 1)
    mean = cv2.boxFilter(image, -1, box)
    variance = cv2.boxFilter(image * image, -1, box) - mean * mean
    gain = variance / (variance + eps)
    offset = mean - gain * mean
    return cv2.boxFilter(gain, -1, box) * image + cv2.boxFilter(offset, -1, box)


def _gradient(image: np.ndarray) -> np.ndarray:
    """Gradient magnitude per pixel (Sobel, scaled to units per px)."""
    gx = cv2.Sobel(image, -1, 1, 0, ksize=3, scale=1 / 8)
    gy = cv2.Sobel(image, -1, 0, 1, ksize=3, scale=1 / 8)
    return cv2.magnitude(gx, gy)


def _zero_crossings(dog: np.ndarray) -> np.ndarray:
    """The dark side of each zero crossing: negative pixels with a 4-neighbour >= 0."""
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    light = (dog >= 0).astype(np.uint8)
    return (dog < 0) & (cv2.dilate(light, cross) > 0)


@dataclass(frozen=True)
class _Contours:
    """The page's candidate contours: connected runs of zero-crossing pixels."""

    shape: tuple[int, int]
    pixels: np.ndarray  # flat index of every contour pixel
    label: np.ndarray  # its contour
    lengths: np.ndarray  # pixels per contour
    order: np.ndarray  # the contours worth drawing, strongest first


def _find_contours(edges: np.ndarray, strength: np.ndarray, style: _Style) -> _Contours:
    """Contours by hysteresis on strength, dropping specks; ranked by peak strength."""
    weak = (edges & (strength > style.low)).astype(np.uint8)
    # (Plain labelling and a count over the contour pixels: a third of the cost
    # of OpenCV's labelling with statistics.)
    count, labels = cv2.connectedComponents(weak, connectivity=8)
    pixels = np.flatnonzero(weak)
    label = labels.reshape(-1)[pixels]
    # Each contour's peak strength: hysteresis keeps contours that reach `high`,
    # and the budget takes the strongest of those first.
    peak = np.zeros(count, np.float32)
    np.maximum.at(peak, label, strength.reshape(-1)[pixels])
    peak[0] = 0.0
    lengths = np.bincount(label, minlength=count)
    eligible = (peak >= style.high) & (lengths >= style.min_length * max(edges.shape))
    order = np.argsort(-peak)
    return _Contours(edges.shape, pixels, label, lengths, order[eligible[order]])


def _select_contours(
    found: _Contours, *, length_budget: float, spacing: float
) -> tuple[np.ndarray, bool]:
    """Contours worth drawing (a bool mask on the page), and whether that was all of them.

    `length_budget` is the contour length (px) the page can take: the strongest
    contours are kept until it is spent. A contour running mostly within
    `spacing` px of a stronger one is dropped: with the pen, the two would
    leave a sliver too thin to color, or merge into one thick smudge.
    """
    # Crowding is judged on a half-size grid: a quarter of the distance-transform work.
    rows, cols = np.divmod(found.pixels, found.shape[1])
    rows //= 2
    cols //= 2
    keep = np.zeros(found.lengths.size, bool)
    remaining = found.order
    spent = 0.0
    exhausted = False
    # In tiers, strongest first: each tier is checked against the lines kept
    # before it (one distance transform per tier, not per contour).
    tier = iter(TIERS)
    while remaining.size and spent < length_budget:
        if spent:
            near = _distance_to(_half(_mask(found, keep)))[rows, cols] < spacing / 2
            crowded = np.bincount(found.label, weights=near, minlength=keep.size)
            remaining = remaining[crowded[remaining] < MAX_NEAR * found.lengths[remaining]]
        limit = min(length_budget, spent + length_budget * next(tier, TIERS[-1]))
        total = spent + np.cumsum(found.lengths[remaining])
        take = max(int(np.searchsorted(total, limit, side="right")), 1)
        if total[take - 1] > length_budget:
            break
        keep[remaining[:take]] = True
        spent = float(total[take - 1])
        remaining = remaining[take:]
    else:
        exhausted = not remaining.size
    return _mask(found, keep), exhausted


def _mask(found: _Contours, keep: np.ndarray) -> np.ndarray:
    """The pixels of the kept contours, as a bool image."""
    mask = np.zeros(found.shape[0] * found.shape[1], bool)
    mask[found.pixels[keep[found.label]]] = True
    return mask.reshape(found.shape)


# The 8 neighbours (dy, dx), clockwise from the top-left; neighbour i is bit i of a code.
_RING = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))


def _end_codes() -> np.ndarray:
    """For each neighbourhood code: is the pixel the end of a line?

    An end has 1-3 neighbours, all in one unbroken arc around it (a pixel in
    the middle of a line has neighbours on two sides).
    """
    table = np.zeros(256, bool)
    for code in range(1, 256):
        bits = [(code >> i) & 1 for i in range(8)]
        arcs = sum(1 for i in range(8) if bits[i] and not bits[i - 1])
        table[code] = sum(bits) <= 3 and arcs == 1
    return table


_IS_END = _end_codes()


def _line_ends(contours: np.ndarray) -> list[tuple[int, int]]:
    """(x, y) of each loose contour end (one per end, even where a tip is 2 px wide)."""
    # Neighbourhood codes for contour pixels only (a few % of the page).
    padded = np.pad(contours, 1)
    width = padded.shape[1]
    pixels = np.flatnonzero(padded)
    flat = padded.reshape(-1)
    codes = np.zeros(pixels.size, np.uint8)
    for bit, (dy, dx) in enumerate(_RING):
        codes |= flat[pixels + dy * width + dx].astype(np.uint8) << bit
    ys, xs = np.divmod(pixels[_IS_END[codes]], width)
    ends: list[tuple[int, int]] = []
    for x, y in zip((xs - 1).tolist(), (ys - 1).tolist(), strict=True):
        # Row-major order: a tip pixel's twin, if any, was met just before it.
        if not any(abs(x - ex) <= 2 and abs(y - ey) <= 2 for ex, ey in ends[-4:]):
            ends.append((x, y))
    return ends


def _link_ends(contours: np.ndarray) -> np.ndarray:
    """Join each loose contour end to the nearest line (or page edge) ahead of it.

    Outlines a photo gives us break wherever the contrast dips; a coloring page
    needs them closed, or two areas run into one. An end is joined with a
    straight segment to any line that is not its own stroke (its own contour
    further round counts: that closes a loop), up to LINK_REACH ahead and less
    far the more it turns away from its direction. Ends with nothing ahead stay
    loose.
    """
    height, width = contours.shape
    lines = contours.astype(np.uint8)
    links = np.zeros_like(lines)
    reach = LINK_REACH * max(height, width)
    min_cos = math.cos(math.radians(LINK_ANGLE))
    for x, y in _line_ends(contours):
        direction = _end_direction(lines, x, y)
        if direction is None:
            continue
        # Only the region ahead can hold a target: a box around it is ~5x less
        # work than the whole disc of `reach` (sideways, a link can go at most
        # max(cos^2 sin) = 0.385 of it).
        ahead = x + reach * direction[0], y + reach * direction[1]
        side = 0.4 * reach * abs(direction[1]), 0.4 * reach * abs(direction[0])
        x0 = max(0, math.floor(min(x, ahead[0]) - side[0]))
        x1 = min(width, math.ceil(max(x, ahead[0]) + side[0]) + 1)
        y0 = max(0, math.floor(min(y, ahead[1]) - side[1]))
        y1 = min(height, math.ceil(max(y, ahead[1]) + side[1]) + 1)
        window = lines[y0:y1, x0:x1]
        # The end's own stroke is what is connected to it inside the box; its own
        # contour coming back into the box elsewhere is a target (closing a loop).
        _, labels = cv2.connectedComponents(window, connectivity=8)
        targets = (window > 0) & (labels != labels[y - y0, x - x0])
        # The page edge closes a region as well as a line does.
        if y0 == 0:
            targets[0, :] = True
        if x0 == 0:
            targets[:, 0] = True
        if y1 == height:
            targets[-1, :] = True
        if x1 == width:
            targets[:, -1] = True
        target = _straight_link(targets, (x - x0, y - y0), direction, reach, min_cos)
        if target is not None:
            # Two px wide, like the zero-crossing contours (a negative pixel and
            # often its neighbour): drawn with the pen, a one-px link would look
            # like a weaker line.
            cv2.line(links, (x, y), (target[0] + x0, target[1] + y0), 1, 2)
    return contours | (links > 0)


def _end_direction(lines: np.ndarray, x: int, y: int) -> np.ndarray | None:
    """Unit vector pointing out of the contour end at (x, y), None if unclear."""
    r = TANGENT_LENGTH
    x0, y0 = max(0, x - r), max(0, y - r)
    window = lines[y0 : y + r + 1, x0 : x + r + 1]
    _, labels = cv2.connectedComponents(window, connectivity=8)
    ys, xs = np.nonzero(labels == labels[y - y0, x - x0])
    dy, dx = ys - (y - y0), xs - (x - x0)
    behind = dy * dy + dx * dx <= r * r
    direction = np.array([-dx[behind].mean(), -dy[behind].mean()])
    norm = float(np.hypot(*direction))
    if norm < 2.0:  # a blunt tip or a tiny loop: no way to tell where it points
        return None
    return direction / norm


def _straight_link(
    targets: np.ndarray,
    end: tuple[int, int],
    direction: np.ndarray,
    reach: float,
    min_cos: float,
) -> tuple[int, int] | None:
    """The target pixel (x, y) a straight link from `end` should go to, if any."""
    ty, tx = np.nonzero(targets)
    if tx.size == 0:
        return None
    vx, vy = (tx - end[0]).astype(np.float32), (ty - end[1]).astype(np.float32)
    dist = np.hypot(vx, vy)
    cos = (vx * direction[0] + vy * direction[1]) / np.maximum(dist, 1e-6)
    # Straight ahead an end reaches `reach`; the further it would turn, the less
    # far: a long link at a sharp angle reads as a stray line, not a closed outline.
    ok = (cos >= min_cos) & (dist <= reach * np.maximum(cos, 0.0) ** 2)
    if not ok.any():
        return None
    # Nearest first, but a target straight ahead beats a slightly nearer one off to a side.
    best = int(np.argmin(np.where(ok, dist * (2.0 - cos), np.inf)))
    return int(tx[best]), int(ty[best])


def _ink_share(contours: np.ndarray, stroke: float) -> float:
    """The share of the page the contours ink, drawn `stroke` wide.

    Worked out on a half-size grid: a quarter of the distance-transform work,
    for an estimate within a few % (it only steers the ink budget).
    """
    half = _half(contours)
    return float(np.count_nonzero(_distance_to(half) <= stroke / 4)) / half.size


def _half(mask: np.ndarray) -> np.ndarray:
    """A bool mask at half size; a 2x2 block is set if any of its pixels is."""
    pooled = cv2.dilate(mask.astype(np.uint8), np.ones((2, 2), np.uint8), anchor=(0, 0))
    return pooled[::2, ::2] > 0


def _dilate(mask: np.ndarray, radius: float) -> np.ndarray:
    """Pixels within `radius` of the mask (near-Euclidean disc, cost independent of radius)."""
    return _distance_to(mask) <= radius


def _erode(mask: np.ndarray, radius: float) -> np.ndarray:
    """Pixels of the mask farther than `radius` from its outside."""
    return _distance_to(~mask) > radius


def _distance_to(mask: np.ndarray) -> np.ndarray:
    """Distance from every pixel to the nearest True pixel of `mask`."""
    return cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_5)


def _draw(reach: np.ndarray, stroke: float) -> np.ndarray:
    """Ink (bool) with every contour drawn `stroke` wide; no solid areas.

    `reach` is every pixel's distance to the nearest contour.
    """
    ink = reach <= stroke / 2
    # Paper specks enclosed by ink (strokes crossing in a tangle) are too small
    # to color and vanish in printing: count them as ink, so the hollowing below
    # sees the tangle as the solid area it will look like.
    _, labels = cv2.connectedComponents((~ink).astype(np.uint8), connectivity=4)
    specks = np.bincount(labels.reshape(-1)) < stroke * stroke
    specks[0] = False  # label 0 is the ink itself
    if specks.any():
        ink |= specks[labels]
    # Where strokes merged into something thicker than two strokes, keep only
    # its outline: a coloring page has no filled black areas.
    ink &= ~_erode(ink, stroke)
    return ink


def _smooth(ink: np.ndarray) -> np.ndarray:
    """Ink as 0 / 255 with smooth (not stair-stepped) outlines."""
    # A one-pixel blur before thresholding rounds off the pixel staircase
    # (in 8 bits: a third of the memory traffic of floats, the same outlines).
    blurred = cv2.GaussianBlur(ink.astype(np.uint8) * 255, (0, 0), 1.0)
    return np.where(blurred > 127, 0, 255).astype(np.uint8)
