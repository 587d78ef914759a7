"""Objective measures of a coloring page, for tests, tuning and monitoring.

A good page has thin, even outlines (a few percent ink), no dust, no filled
black areas and many closed regions to color in.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

INK_LEVEL = 128  # pixels darker than this print as ink
SPECK_AREA = 0.00003  # ink components below this share of the page are specks
REGION_AREA = 0.0005  # paper regions below this share of the page are too small to color
BLOB_STROKES = 3  # a solid blob is ink at least this many strokes wide

# What a page worth printing measures (issue #6). Ink: enough line work to be a
# picture, little enough to leave room for color. A plain silhouette is one
# outline with nothing inside it: its ink is that outline's length times the
# pen, and its regions are inside and outside, so it has floors of its own.
INK_RANGE = (0.03, 0.12)
MAX_SPECK_INK_SHARE = 0.01
MAX_BLOB_SHARE = 0.005
MIN_REGIONS = 20
SILHOUETTE_MIN_INK = 0.01
SILHOUETTE_REGIONS = 2


@dataclass(frozen=True)
class PageQuality:
    ink_coverage: float  # share of the page that is ink, 0..1
    speck_ink_share: float  # share of the ink in tiny isolated components
    largest_blob_share: float  # largest solid dark area / page area
    colorable_regions: int  # paper regions large enough to color
    stroke_width_median: float  # typical stroke width in pixels


def measure_page(lineart: np.ndarray) -> PageQuality:
    """Measure a line-art page (uint8, 0 = ink, 255 = paper)."""
    ink = (lineart < INK_LEVEL).astype(np.uint8)
    area = ink.size
    ink_pixels = int(ink.sum())
    stroke = _stroke_width_median(ink)
    return PageQuality(
        ink_coverage=ink_pixels / area,
        speck_ink_share=_speck_pixels(ink) / ink_pixels if ink_pixels else 0.0,
        largest_blob_share=_largest_blob(ink, stroke) / area,
        colorable_regions=_colorable_regions(ink),
        stroke_width_median=stroke,
    )


def target_misses(quality: PageQuality, *, silhouette: bool = False) -> list[str]:
    """Names of the figures outside the targets above; empty for a page worth printing."""
    low, high = INK_RANGE
    if silhouette:
        low = SILHOUETTE_MIN_INK
    checks = {
        "ink_coverage": low <= quality.ink_coverage <= high,
        "speck_ink_share": quality.speck_ink_share < MAX_SPECK_INK_SHARE,
        "largest_blob_share": quality.largest_blob_share < MAX_BLOB_SHARE,
        "colorable_regions": quality.colorable_regions
        >= (SILHOUETTE_REGIONS if silhouette else MIN_REGIONS),
    }
    return [name for name, ok in checks.items() if not ok]


def _component_areas(mask: np.ndarray, connectivity: int) -> np.ndarray:
    """Areas of the connected components of a 0/1 mask (background excluded)."""
    # Plain labelling and a pixel count: a third of the cost of OpenCV's
    # labelling with statistics, which also works out boxes and centroids.
    count, labels = cv2.connectedComponents(mask, connectivity=connectivity)
    return np.bincount(labels.reshape(-1), minlength=count)[1:]


def _speck_pixels(ink: np.ndarray) -> int:
    areas = _component_areas(ink, 8)
    return int(areas[areas < max(2.0, SPECK_AREA * ink.size)].sum())


def _stroke_width_median(ink: np.ndarray) -> float:
    """Median stroke width, read off the distance transform at stroke centres.

    With d = distance to paper, an odd-width stroke has one centre pixel
    (a strict maximum of d across the stroke, width 2d - 1) and an even-width
    stroke two (a maximum tied with its neighbour, width 2d).
    """
    if not ink.any():
        return 0.0
    dist = np.pad(cv2.distanceTransform(ink, cv2.DIST_L2, cv2.DIST_MASK_PRECISE), 1)
    ys, xs = np.nonzero(dist)
    d = dist[ys, xs]
    odd = np.zeros(d.shape, bool)
    even = np.zeros(d.shape, bool)
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        ahead, behind = dist[ys + dy, xs + dx], dist[ys - dy, xs - dx]
        odd |= (d > ahead) & (d > behind)
        even |= ((d == ahead) & (d > behind)) | ((d == behind) & (d > ahead))
    widths = np.where(odd, 2 * d - 1, 2 * d)[odd | even]
    return float(np.median(widths))


def _largest_blob(ink: np.ndarray, stroke: float) -> int:
    """Area of the largest ink patch that survives an opening several strokes wide.

    The opening (erode, then dilate, by a disc) is done with distance
    transforms: near-Euclidean discs at a cost independent of their size.
    """
    radius = max(1.5, BLOB_STROKES * stroke / 2)
    core = (cv2.distanceTransform(ink, cv2.DIST_L2, cv2.DIST_MASK_5) > radius).astype(np.uint8)
    if not core.any():
        return 0
    near_core = cv2.distanceTransform(1 - core, cv2.DIST_L2, cv2.DIST_MASK_5) <= radius
    solid = (near_core & (ink > 0)).astype(np.uint8)
    return int(_component_areas(solid, 8).max(initial=0))


def _colorable_regions(ink: np.ndarray) -> int:
    """Paper regions big enough to color; the page edge closes regions like a line does."""
    # 4-connectivity: paper touching only diagonally across a line is two regions.
    areas = _component_areas(1 - ink, 4)
    return int((areas >= REGION_AREA * ink.size).sum())
