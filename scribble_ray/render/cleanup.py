"""Clean-up of line art drawn elsewhere (Gemini): two tones, no dust, white paper.

A model asked for "black outlines on white" still answers with anti-aliased
grays, a slightly off-white or tinted paper, JPEG-ish noise and now and then
white lines on black. The page we print must look like the local renderer's:
pure 0 / 255, paper white, no specks.
"""

from __future__ import annotations

import cv2
import numpy as np

from scribble_ray.render.quality import SPECK_AREA

# Otsu finds the gap between the ink and paper tones; the clamp keeps a nearly
# blank page (one tone plus noise) from turning its paper grain into ink, and
# light shading (a gray fill) from counting as ink.
MIN_THRESHOLD = 48
MAX_THRESHOLD = 160


def clean_lineart(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3) line art -> uint8 (H, W), 0 = ink, 255 = paper."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 array (H, W, 3), got {rgb.dtype} {rgb.shape}")
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    otsu, _ = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    ink = gray < int(np.clip(otsu, MIN_THRESHOLD, MAX_THRESHOLD))
    if _border_is_ink(ink):
        ink = ~ink  # white lines on black: the paper is what runs along the edges
    return np.where(_without_specks(ink), 0, 255).astype(np.uint8)


def _border_is_ink(ink: np.ndarray) -> bool:
    border = np.concatenate([ink[0], ink[-1], ink[1:-1, 0], ink[1:-1, -1]])
    return bool(border.mean() > 0.5)


def _without_specks(ink: np.ndarray) -> np.ndarray:
    """Drop isolated ink components smaller than a speck (the measure quality.py uses)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(ink.astype(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= max(2.0, SPECK_AREA * ink.size)
    keep[0] = False  # the background label
    return keep[labels] if count > 1 else np.zeros_like(ink)
