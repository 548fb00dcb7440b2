"""Optical flow on the low-resolution input, upsampled to the output, and warping with a confidence mask.

Conventions: `flow_cur_to_prev[y, x]` is the displacement from a pixel of the current frame to where the same
point sat in the previous frame, so `warp(previous, flow_cur_to_prev)` brings the previous frame into the
current one (backward warping, no holes).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from vidup.config import FlowConfig

MIN_FLOW_SIDE = 12  # DIS optical flow needs frames at least this big on each side


def flow_fits(frame: np.ndarray) -> bool:
    """Whether optical flow can be computed on frames of this size (smaller ones have no motion, only cuts)."""
    return min(frame.shape[:2]) >= MIN_FLOW_SIDE


DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


def luma(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


class FlowEstimator:
    """DIS optical flow (OpenCV), preset configurable; one instance per stream (it holds scratch buffers).

    DIS stops refining at its preset's finest pyramid level (medium: half the image size). On a small input that
    leaves too coarse a field to carry texture through a warp (a 160 px input gives an 80 px field), so with
    `min_field_side` the finest level is the coarsest one whose long side keeps at least that many pixels: small
    inputs are refined to full resolution, large ones keep the preset's level (and its cost)."""

    def __init__(self, preset: str, min_field_side: int = 0):
        self.preset = preset
        self.min_field_side = min_field_side
        self.dis = cv2.DISOpticalFlow_create(DIS_PRESETS[preset])
        self.preset_finest = self.dis.getFinestScale()
        self._long_side = 0

    def finest_scale(self, long_side: int) -> int:
        """The pyramid level (0: full size) DIS refines down to for images of this long side."""
        if not self.min_field_side:
            return self.preset_finest
        level = 0
        while level < self.preset_finest and long_side / 2 ** (level + 1) >= self.min_field_side:
            level += 1
        return level

    def __call__(self, source_gray: np.ndarray, target_gray: np.ndarray) -> np.ndarray:
        """Flow from `source` to `target`: source(p) ~ target(p + flow(p)). HxWx2 float32."""
        long_side = max(source_gray.shape[:2])
        if long_side != self._long_side:
            self.dis.setFinestScale(self.finest_scale(long_side))
            self._long_side = long_side
        return self.dis.calc(source_gray, target_gray, None)


@lru_cache(maxsize=8)
def _grid(height: int, width: int) -> np.ndarray:
    """Pixel coordinates (HxWx2, x then y), built once per frame size (every frame warps at the same sizes)."""
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    grid = np.dstack([xs, ys])
    grid.flags.writeable = False  # shared between calls
    return grid


def warp(
    image: np.ndarray, flow: np.ndarray, border: int = cv2.BORDER_REPLICATE, interpolation: int = cv2.INTER_LINEAR
) -> np.ndarray:
    """Backward-warp `image` by `flow` (same HxW): out(p) = image(p + flow(p)), bilinear (or `interpolation`:
    cv2.INTER_CUBIC keeps texture sharp through repeated warps). One add builds the sampling map and remap reads
    it as a single two-channel map."""
    h, w = flow.shape[:2]
    return cv2.remap(image, cv2.add(_grid(h, w), flow), None, interpolation, borderMode=border)


def upsample_flow(flow: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize a flow field to another resolution, scaling its vectors with it (scaled at the small size, where it
    is cheap: resizing is linear)."""
    h, w = flow.shape[:2]
    scaled = flow * np.array([width / w, height / h], np.float32)
    return cv2.resize(scaled, (width, height), interpolation=cv2.INTER_LINEAR)


def _squared_length(vectors: np.ndarray) -> np.ndarray:
    return np.einsum("ijk,ijk->ij", vectors, vectors)


def consistent_flow(
    flow_cur_to_prev: np.ndarray,
    flow_prev_to_cur: np.ndarray,
    share: float = FlowConfig.consistency_share,
    px2: float = FlowConfig.consistency_px2,
) -> np.ndarray:
    """True where the round trip current -> previous -> current lands back home (not occluded)."""
    back = warp(flow_prev_to_cur, flow_cur_to_prev)
    round_trip = cv2.add(flow_cur_to_prev, back)
    magnitude = _squared_length(flow_cur_to_prev) + _squared_length(back)
    return _squared_length(round_trip) <= share * magnitude + px2


def confidence_mask(
    flow_cur_to_prev: np.ndarray,
    flow_prev_to_cur: np.ndarray,
    cur_rgb: np.ndarray,
    prev_rgb: np.ndarray,
    settings: FlowConfig = FlowConfig(),
) -> np.ndarray:
    """Where the warped previous frame can be trusted, in [0, 1] at input resolution.

    Forward-backward consistency (occlusions and disocclusions make the round trip miss: Sundaram et al. 2010)
    times a photometric check on the input (the warped previous input must look like the current one), eroded
    by a pixel and feathered so blends have no hard seams.
    """
    consistent = consistent_flow(
        flow_cur_to_prev, flow_prev_to_cur, settings.consistency_share, settings.consistency_px2
    )
    difference = cv2.absdiff(warp(prev_rgb, flow_cur_to_prev), cur_rgb)  # 8-bit views: exact small integers
    photometric = difference.max(-1) <= settings.photometric_threshold * 255.0
    mask = (consistent & photometric).astype(np.float32)
    mask = cv2.erode(mask, np.ones((3, 3), np.uint8))
    if settings.feather > 0:
        mask = cv2.GaussianBlur(mask, (0, 0), settings.feather) * mask  # soft inside, still zero on the rejected pixels
    return mask


@dataclass
class FlowPair:
    """Flow between consecutive input frames in both directions, plus the confidence of the backward warp."""

    cur_to_prev: np.ndarray
    prev_to_cur: np.ndarray
    confidence: np.ndarray

    @property
    def trusted_fraction(self) -> float:
        """How much of the current frame the warped previous one explains (0: a cut, 1: all of it)."""
        return float(self.confidence.mean())


def flows_both_ways(
    estimator: FlowEstimator, prev_rgb: np.ndarray, cur_rgb: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(current -> previous, previous -> current) flow between two RGB frames."""
    prev_gray, cur_gray = luma(prev_rgb), luma(cur_rgb)
    return estimator(cur_gray, prev_gray), estimator(prev_gray, cur_gray)


def flow_pair(
    estimator: FlowEstimator, prev_rgb: np.ndarray, cur_rgb: np.ndarray, settings: FlowConfig = FlowConfig()
) -> FlowPair:
    cur_to_prev, prev_to_cur = flows_both_ways(estimator, prev_rgb, cur_rgb)
    return FlowPair(cur_to_prev, prev_to_cur, confidence_mask(cur_to_prev, prev_to_cur, cur_rgb, prev_rgb, settings))
